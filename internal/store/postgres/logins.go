package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

const loginCols = "id, username, created, expires, hash, provider, id_token"

// CreateLogin stores l, whose Hash is the lookup key, and in the same
// transaction drops logins that expired before l.Created, so the table
// holds only what could still be used. It returns an error wrapping
// [store.ErrExists] if the id or hash is taken, one wrapping
// [store.ErrNotFound] if l.User is not a user.
func (db *DB) CreateLogin(ctx context.Context, l session.Login) error {
	if l.ID == "" || len(l.Hash) == 0 || l.Expires.IsZero() {
		return fmt.Errorf("create login %q: no id, hash or expiry", l.ID)
	}
	if l.Created.IsZero() {
		l.Created = db.now()
	}
	var e encoder
	args := []any{l.ID, l.User, e.time("created", l.Created), e.time("expires", l.Expires), l.Hash, l.Provider, l.IDToken}
	if e.err != nil {
		return fmt.Errorf("create login %s: %w", l.ID, e.err)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, rebind("DELETE FROM logins WHERE expires < ?"), args[2]); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, rebind("INSERT INTO logins ("+loginCols+") VALUES (")+placeholders(1, 7)+")", args...)
		return err
	})
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create login %s: %w", l.ID, store.ErrExists)
	case isMissingRef(err):
		return fmt.Errorf("create login %s: user %s: %w", l.ID, l.User, store.ErrNotFound)
	}
	return fmt.Errorf("create login %s: %w", l.ID, err)
}

// LoginByHash returns the login whose Hash is hash, expired or not, or an
// error wrapping [store.ErrNotFound]. It reads on a read connection, so a
// write lock held elsewhere does not stop it.
func (db *DB) LoginByHash(ctx context.Context, hash []byte) (session.Login, error) {
	if len(hash) == 0 {
		return session.Login{}, fmt.Errorf("login by hash: %w", store.ErrNotFound)
	}
	var (
		l                session.Login
		created, expires int64
	)
	err := db.db.QueryRowContext(ctx, rebind("SELECT "+loginCols+" FROM logins WHERE hash = ?"), hash).Scan(&l.ID, &l.User, &created, &expires, &l.Hash, &l.Provider, &l.IDToken)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.Login{}, fmt.Errorf("login by hash: %w", err)
	}
	l.Created, l.Expires = fromNanos(created), fromNanos(expires)
	return l, nil
}

// DeleteLogin deletes login id; a missing one is no error (a second
// logout).
func (db *DB) DeleteLogin(ctx context.Context, id string) error {
	if _, err := db.db.ExecContext(ctx, rebind("DELETE FROM logins WHERE id = ?"), id); err != nil {
		return fmt.Errorf("delete login %s: %w", id, err)
	}
	return nil
}

// RevokeUser deletes user's logins and revokes their tokens, in one
// transaction.
func (db *DB) RevokeUser(ctx context.Context, user string) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, rebind("DELETE FROM logins WHERE username = ?"), user); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, rebind("UPDATE tokens SET revoked = true WHERE username = ? AND NOT revoked"), user)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke user %s: %w", user, err)
	}
	return nil
}
