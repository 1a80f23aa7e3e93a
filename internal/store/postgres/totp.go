package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// CreatePendingLogin stores p and, in the same transaction, drops pending
// logins that expired before p.Created.
func (db *DB) CreatePendingLogin(ctx context.Context, p session.PendingLogin) error {
	if len(p.Hash) == 0 || p.User == "" || p.Expires.IsZero() {
		return errors.New("create pending login: no hash, user or expiry")
	}
	if p.Created.IsZero() {
		p.Created = db.now()
	}
	groups, err := json.Marshal(p.Groups)
	if err != nil {
		return fmt.Errorf("create pending login %s: %w", p.User, err)
	}
	var e encoder
	created, expires := e.time("created", p.Created), e.time("expires", p.Expires)
	if e.err != nil {
		return fmt.Errorf("create pending login %s: %w", p.User, e.err)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, rebind("DELETE FROM pending_logins WHERE expires < ?"), created); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, rebind(`INSERT INTO pending_logins (hash, username, admin, method, groups, email, created, expires)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), p.Hash, p.User, p.Admin, p.Method, string(groups), p.Email, created, expires)
		return err
	})
	if isExists(err) {
		return fmt.Errorf("create pending login %s: %w", p.User, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create pending login %s: %w", p.User, err)
	}
	return nil
}

// PendingLoginByHash returns the pending login whose hash is hash, or an
// error wrapping [store.ErrNotFound].
func (db *DB) PendingLoginByHash(ctx context.Context, hash []byte) (session.PendingLogin, error) {
	if len(hash) == 0 {
		return session.PendingLogin{}, fmt.Errorf("pending login: %w", store.ErrNotFound)
	}
	var (
		p                session.PendingLogin
		groups           string
		created, expires int64
	)
	err := db.db.QueryRowContext(ctx, rebind("SELECT hash, username, admin, method, groups, email, created, expires FROM pending_logins WHERE hash = ?"), hash).
		Scan(&p.Hash, &p.User, &p.Admin, &p.Method, &groups, &p.Email, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.PendingLogin{}, fmt.Errorf("pending login: %w", err)
	}
	if err := json.Unmarshal([]byte(groups), &p.Groups); err != nil {
		return session.PendingLogin{}, fmt.Errorf("pending login %s: groups: %w", p.User, err)
	}
	p.Created, p.Expires = fromNanos(created), fromNanos(expires)
	return p, nil
}

// TakePendingLogin deletes the pending login with hash, or returns an
// error wrapping [store.ErrNotFound] if there is none (taken already).
func (db *DB) TakePendingLogin(ctx context.Context, hash []byte) error {
	res, err := db.db.ExecContext(ctx, rebind("DELETE FROM pending_logins WHERE hash = ?"), hash)
	if err != nil {
		return fmt.Errorf("take pending login: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("take pending login: %w", cmpErr(err, store.ErrNotFound))
	}
	return nil
}

// GetTOTP returns user's second factor, or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetTOTP(ctx context.Context, user string) (session.TOTP, error) {
	t := session.TOTP{User: user}
	var created, failSince int64
	err := db.db.QueryRowContext(ctx, rebind("SELECT secret, last_step, created, failures, fail_since FROM totp WHERE username = ?"), user).
		Scan(&t.Secret, &t.LastStep, &created, &t.Failures, &failSince)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.TOTP{}, fmt.Errorf("totp %s: %w", user, err)
	}
	t.Created = fromNanos(created)
	if failSince != 0 {
		t.FailSince = fromNanos(failSince)
	}
	return t, nil
}

// EnrolTOTP stores t and its recovery code hashes in one transaction.
func (db *DB) EnrolTOTP(ctx context.Context, t session.TOTP, recovery [][]byte) error {
	if t.User == "" || len(t.Secret) == 0 {
		return errors.New("enrol totp: no user or secret")
	}
	var e encoder
	created := e.time("created", t.Created)
	if e.err != nil || created == nil {
		return fmt.Errorf("enrol totp %s: created: %w", t.User, cmpErr(e.err, errors.New("zero")))
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, rebind("INSERT INTO totp (username, secret, last_step, created) VALUES (?, ?, ?, ?)"), t.User, t.Secret, t.LastStep, created); err != nil {
			return err
		}
		for _, h := range recovery {
			if _, err := tx.ExecContext(ctx, rebind("INSERT INTO totp_recovery (username, hash) VALUES (?, ?)"), t.User, h); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("enrol totp %s: %w", t.User, store.ErrExists)
	case isMissingRef(err):
		return fmt.Errorf("enrol totp %s: %w", t.User, store.ErrNotFound)
	}
	return fmt.Errorf("enrol totp %s: %w", t.User, err)
}

// UseTOTPStep moves user's last accepted step to step if step is later;
// the condition is in the UPDATE, so two gateways racing with one code
// cannot both win.
func (db *DB) UseTOTPStep(ctx context.Context, user string, step int64) error {
	res, err := db.db.ExecContext(ctx, rebind("UPDATE totp SET last_step = ?, failures = 0, fail_since = 0 WHERE username = ? AND last_step < ?"), step, user, step)
	if err != nil {
		return fmt.Errorf("use totp step %s: %w", user, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("use totp step %s: %w", user, err)
	} else if n == 1 {
		return nil
	}
	if _, err := db.GetTOTP(ctx, user); err != nil {
		return fmt.Errorf("use totp step: %w", err)
	}
	return fmt.Errorf("use totp step %s: step %d used already: %w", user, step, store.ErrConflict)
}

// UseRecoveryCode deletes one of user's recovery codes by its hash.
func (db *DB) UseRecoveryCode(ctx context.Context, user string, hash []byte) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, rebind("DELETE FROM totp_recovery WHERE username = ? AND hash = ?"), user, hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmpErr(err, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, rebind("UPDATE totp SET failures = 0, fail_since = 0 WHERE username = ?"), user)
		return err
	})
	if err != nil {
		return fmt.Errorf("use recovery code %s: %w", user, err)
	}
	return nil
}

// FailTOTP counts a wrong code for user at now within window.
func (db *DB) FailTOTP(ctx context.Context, user string, now time.Time, window time.Duration) (int, error) {
	var e encoder
	at, since := e.time("now", now), e.time("window start", now.Add(-window))
	if e.err != nil {
		return 0, fmt.Errorf("fail totp %s: %w", user, e.err)
	}
	var n int
	err := db.db.QueryRowContext(ctx, rebind(`UPDATE totp SET
			failures = CASE WHEN fail_since < ? THEN 1 ELSE failures + 1 END,
			fail_since = CASE WHEN fail_since < ? THEN ? ELSE fail_since END
		WHERE username = ? RETURNING failures`), since, since, at, user).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("fail totp %s: %w", user, err)
	}
	return n, nil
}

// DeleteTOTP removes user's second factor; the recovery codes go with it
// (ON DELETE CASCADE).
func (db *DB) DeleteTOTP(ctx context.Context, user string) error {
	if _, err := db.db.ExecContext(ctx, rebind("DELETE FROM totp WHERE username = ?"), user); err != nil {
		return fmt.Errorf("delete totp %s: %w", user, err)
	}
	return nil
}
