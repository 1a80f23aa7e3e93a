package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

const shareCols = "id, session_id, mode, created_by, created, expires, revoked, hash"

func scanShare(r rowScanner) (session.Share, error) {
	var (
		s       session.Share
		mode    string
		created int64
		expires sql.NullInt64
	)
	if err := r.Scan(&s.ID, &s.Session, &mode, &s.CreatedBy, &created, &expires, &s.Revoked, &s.Hash); err != nil {
		return session.Share{}, err
	}
	s.Mode = session.Mode(mode)
	s.Created = fromNanos(created)
	s.Expires = decodeTime(expires)
	return s, nil
}

// CreateShare stores s, whose Hash is the lookup key. A zero s.Created is
// stored as the DB's clock; a zero Expires is stored as zero, for the
// caller to read as it likes. It returns an error wrapping
// [store.ErrExists] if the id or the hash is taken, one wrapping
// [store.ErrNotFound] if s.Session is not a session, and refuses an empty
// id or hash.
func (db *DB) CreateShare(ctx context.Context, s session.Share) error {
	if s.ID == "" || len(s.Hash) == 0 {
		return fmt.Errorf("create share %q: no id or no hash", s.ID)
	}
	if s.Created.IsZero() {
		s.Created = db.now()
	}
	var e encoder
	args := []any{s.ID, s.Session, string(s.Mode), s.CreatedBy, e.time("created", s.Created), e.time("expires", s.Expires), s.Revoked, s.Hash}
	err := e.err
	if err == nil {
		_, err = db.db.ExecContext(ctx, rebind("INSERT INTO shares ("+shareCols+") VALUES (")+placeholders(1, 8)+")", args...)
	}
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create share %s: %w", s.ID, store.ErrExists)
	case isMissingRef(err):
		return fmt.Errorf("create share %s: session %s: %w", s.ID, s.Session, store.ErrNotFound)
	}
	return fmt.Errorf("create share %s: %w", s.ID, err)
}

// ShareByHash returns the share whose Hash is hash, revoked or expired
// ones too, or an error wrapping [store.ErrNotFound]. The error does not
// name the hash.
func (db *DB) ShareByHash(ctx context.Context, hash []byte) (session.Share, error) {
	if len(hash) == 0 {
		return session.Share{}, fmt.Errorf("share by hash: %w", store.ErrNotFound)
	}
	s, err := scanShare(db.db.QueryRowContext(ctx, rebind("SELECT "+shareCols+" FROM shares WHERE hash = ?"), hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.Share{}, fmt.Errorf("share by hash: %w", err)
	}
	return s, nil
}

// ListShares returns the shares of sessionID, revoked and expired ones
// too, newest first. An unknown session has none.
func (db *DB) ListShares(ctx context.Context, sessionID string) ([]session.Share, error) {
	if notText(sessionID) {
		return nil, nil
	}
	rows, err := db.db.QueryContext(ctx, rebind("SELECT "+shareCols+" FROM shares WHERE session_id = ? ORDER BY created DESC, id DESC"), sessionID)
	if err != nil {
		return nil, fmt.Errorf("list shares of session %s: %w", sessionID, err)
	}
	defer rows.Close()
	var out []session.Share
	for rows.Next() {
		s, err := scanShare(rows)
		if err != nil {
			return nil, fmt.Errorf("list shares of session %s: %w", sessionID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list shares of session %s: %w", sessionID, err)
	}
	return out, nil
}

// RevokeShare revokes share id of sessionID. Revoking a revoked share
// succeeds. It returns an error wrapping [store.ErrNotFound] if the
// session has no share id, another session's included.
func (db *DB) RevokeShare(ctx context.Context, sessionID, id string) error {
	if notText(sessionID, id) {
		return fmt.Errorf("revoke share %q: %w", id, store.ErrNotFound)
	}
	res, err := db.db.ExecContext(ctx, rebind("UPDATE shares SET revoked = true WHERE session_id = ? AND id = ?"), sessionID, id)
	if err == nil {
		err = affectedOne(res)
	}
	if err != nil {
		return fmt.Errorf("revoke share %s of session %s: %w", id, sessionID, err)
	}
	return nil
}
