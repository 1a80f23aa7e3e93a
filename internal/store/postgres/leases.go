package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/airlock-hpc/airlock/internal/store"
)

// TakeLease gives name to holder until now+ttl unless another holder has
// it unexpired, in one statement: the upsert's row lock makes two
// gateways racing for a free lease see one winner. Times come from the
// caller's clock; gateways on one database are expected to keep theirs
// in step (NTP), and the ttl should dwarf any skew.
func (db *DB) TakeLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, errors.New("take lease: no name, holder or ttl")
	}
	var e encoder
	at, until := e.time("now", now), e.time("expiry", now.Add(ttl))
	if e.err != nil || at == nil {
		return false, fmt.Errorf("take lease %s: %w", name, cmpErr(e.err, errors.New("zero time")))
	}
	var got string
	err := db.db.QueryRowContext(ctx, `INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
			WHERE leases.holder = excluded.holder OR leases.expires < $4
		RETURNING holder`, name, holder, until, at).Scan(&got)
	switch {
	case err == nil:
		return got == holder, nil
	case isNoRows(err):
		// The WHERE refused the update: someone else holds it.
		return false, nil
	}
	return false, fmt.Errorf("take lease %s: %w", name, err)
}

// ReleaseLease drops name if holder has it.
func (db *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := db.db.ExecContext(ctx, "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// SharedSecret returns the secret name, storing fresh first if there is
// none. Two statements, not one: under READ COMMITTED the SELECT then
// runs on a snapshot taken after a racing gateway's insert committed
// (which the INSERT … DO NOTHING waited for), so it sees the winner's.
func (db *DB) SharedSecret(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	if name == "" || len(fresh) == 0 {
		return nil, errors.New("shared secret: no name or value")
	}
	if _, err := db.db.ExecContext(ctx, "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, fresh); err != nil {
		return nil, fmt.Errorf("shared secret %s: %w", name, err)
	}
	var v []byte
	if err := db.db.QueryRowContext(ctx, "SELECT value FROM secrets WHERE name = $1", name).Scan(&v); err != nil {
		return nil, fmt.Errorf("shared secret %s: %w", name, err)
	}
	return v, nil
}

// Spend records key until expires, once: the upsert takes over only an
// expired record, so of gateways racing with one key one wins. Expired
// records are dropped on the way (spending is rare: a browser RDP
// connection).
func (db *DB) Spend(ctx context.Context, key string, now, expires time.Time) error {
	var e encoder
	at, until := e.time("now", now), e.time("expires", expires)
	if e.err != nil || at == nil || until == nil || key == "" {
		return fmt.Errorf("spend: %w", cmpErr(e.err, errors.New("no key, now or expiry")))
	}
	if _, err := db.db.ExecContext(ctx, "DELETE FROM spent WHERE expires <= $1", at); err != nil {
		return fmt.Errorf("spend: %w", err)
	}
	var got string
	err := db.db.QueryRowContext(ctx, `INSERT INTO spent (key, expires) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET expires = excluded.expires WHERE spent.expires <= $3
		RETURNING key`, key, until, at).Scan(&got)
	switch {
	case err == nil:
		return nil
	case isNoRows(err):
		return fmt.Errorf("spend: used already: %w", store.ErrExists)
	}
	return fmt.Errorf("spend: %w", err)
}

// BucketTAT returns a login bucket's theoretical arrival time (zero: none).
func (db *DB) BucketTAT(ctx context.Context, key string) (time.Time, error) {
	var tat int64
	err := db.db.QueryRowContext(ctx, "SELECT tat FROM login_buckets WHERE key = $1", key).Scan(&tat)
	switch {
	case isNoRows(err):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("login bucket: %w", err)
	}
	return fromNanos(tat), nil
}

// FailBucket counts a failure in a login bucket, in one statement, and
// drops buckets drained a window ago now and then (one call in 64).
func (db *DB) FailBucket(ctx context.Context, key string, now time.Time, interval, window time.Duration) error {
	var e encoder
	at := e.time("now", now)
	if e.err != nil || at == nil || interval <= 0 || window <= 0 {
		return fmt.Errorf("login bucket: %w", cmpErr(e.err, errors.New("no time, interval or window")))
	}
	n := at.(int64)
	_, err := db.db.ExecContext(ctx, `INSERT INTO login_buckets (key, tat) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET tat = LEAST(GREATEST(login_buckets.tat, $3) + $4, $5)`,
		key, n+int64(interval), n, int64(interval), n+int64(window))
	if err != nil {
		return fmt.Errorf("login bucket: %w", err)
	}
	if n%64 == 0 {
		db.db.ExecContext(ctx, "DELETE FROM login_buckets WHERE tat < $1", n)
	}
	return nil
}

// ForgetBucket drops a login bucket.
func (db *DB) ForgetBucket(ctx context.Context, key string) error {
	if _, err := db.db.ExecContext(ctx, "DELETE FROM login_buckets WHERE key = $1", key); err != nil {
		return fmt.Errorf("login bucket: %w", err)
	}
	return nil
}

// PutHandoff stores a handoff, dropping expired ones in the same
// transaction.
func (db *DB) PutHandoff(ctx context.Context, key, bind, value []byte, now, expires time.Time) error {
	var e encoder
	at, until := e.time("now", now), e.time("expires", expires)
	if e.err != nil || at == nil || until == nil || len(key) == 0 || len(bind) == 0 {
		return fmt.Errorf("put handoff: %w", cmpErr(e.err, errors.New("no key, bind, now or expiry")))
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM handoffs WHERE expires <= $1", at); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO handoffs (key, bind, value, expires) VALUES ($1, $2, $3, $4)", key, bind, value, until)
		return err
	})
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("put handoff: %w", store.ErrExists)
	}
	return fmt.Errorf("put handoff: %w", err)
}

// TakeHandoff deletes and returns a handoff held for bind; the DELETE's
// row lock makes one of two racing takes win.
func (db *DB) TakeHandoff(ctx context.Context, key, bind []byte, now time.Time) ([]byte, bool, bool, error) {
	var e encoder
	at := e.time("now", now)
	if e.err != nil || at == nil {
		return nil, false, false, fmt.Errorf("take handoff: %w", cmpErr(e.err, errors.New("no time")))
	}
	var v []byte
	err := db.db.QueryRowContext(ctx, "DELETE FROM handoffs WHERE key = $1 AND bind = $2 AND expires > $3 RETURNING value", key, bind, at).Scan(&v)
	switch {
	case err == nil:
		return v, true, true, nil
	case !isNoRows(err):
		return nil, false, false, fmt.Errorf("take handoff: %w", err)
	}
	var n int
	if err := db.db.QueryRowContext(ctx, "SELECT count(*) FROM handoffs WHERE key = $1 AND expires > $2", key, at).Scan(&n); err != nil {
		return nil, false, false, fmt.Errorf("take handoff: %w", err)
	}
	return nil, n > 0, false, nil
}
