package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

var (
	insertUser = rebind("INSERT INTO users (name, admin, created, method, user_groups, email) VALUES (?, ?, ?, ?, ?, ?)")
	putUser    = insertUser + ` ON CONFLICT (name) DO UPDATE SET admin = excluded.admin, method = excluded.method,
		user_groups = excluded.user_groups, email = excluded.email`
)

// CreateUser adds u; an error wrapping [store.ErrExists] if the name is
// taken.
func (db *DB) CreateUser(ctx context.Context, u session.User) error {
	if u.Name == "" {
		return errors.New("create user: no name")
	}
	if u.Created.IsZero() {
		u.Created = db.now()
	}
	var e encoder
	args := []any{u.Name, u.Admin, e.time("created", u.Created), u.Method, strings.Join(u.Groups, "\n"), u.Email}
	err := e.err
	if err == nil {
		_, err = db.db.ExecContext(ctx, insertUser, args...)
	}
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create user %s: %w", u.Name, store.ErrExists)
	}
	return fmt.Errorf("create user %s: %w", u.Name, err)
}

// PutUser adds u or updates its admin flag, method, groups and e-mail,
// keeping the stored Created.
func (db *DB) PutUser(ctx context.Context, u session.User) error {
	if u.Name == "" {
		return errors.New("put user: no name")
	}
	if u.Created.IsZero() {
		u.Created = db.now()
	}
	var e encoder
	args := []any{u.Name, u.Admin, e.time("created", u.Created), u.Method, strings.Join(u.Groups, "\n"), u.Email}
	err := e.err
	if err == nil {
		_, err = db.db.ExecContext(ctx, putUser, args...)
	}
	if err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, err)
	}
	return nil
}

const selectUser = "SELECT name, admin, created, method, user_groups, email FROM users"

func scanUser(r rowScanner) (session.User, error) {
	var (
		u       session.User
		created int64
		groups  string
	)
	if err := r.Scan(&u.Name, &u.Admin, &created, &u.Method, &groups, &u.Email); err != nil {
		return session.User{}, err
	}
	if groups != "" {
		u.Groups = strings.Split(groups, "\n")
	}
	u.Created = fromNanos(created)
	return u, nil
}

// GetUser returns the user called name, or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetUser(ctx context.Context, name string) (session.User, error) {
	if notText(name) {
		return session.User{}, fmt.Errorf("get user %q: %w", name, store.ErrNotFound)
	}
	u, err := scanUser(db.db.QueryRowContext(ctx, selectUser+" WHERE name = $1", name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.User{}, fmt.Errorf("get user %s: %w", name, err)
	}
	return u, nil
}

// ListUsers returns every user, by name. COLLATE "C" sorts by bytes, as
// SQLite does, whatever the database's locale.
func (db *DB) ListUsers(ctx context.Context) ([]session.User, error) {
	rows, err := db.db.QueryContext(ctx, selectUser+` ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []session.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

const (
	tokenCols   = "id, username, name, created, last_used, revoked, hash"
	tokenByHash = "SELECT " + tokenCols + " FROM tokens WHERE hash = $1 AND NOT revoked"
	stampToken  = "UPDATE tokens SET last_used = $1 WHERE id = $2 AND (last_used IS NULL OR last_used < $1)"
)

func scanToken(r rowScanner) (session.Token, error) {
	var (
		t        session.Token
		created  int64
		lastUsed sql.NullInt64
	)
	if err := r.Scan(&t.ID, &t.User, &t.Name, &created, &lastUsed, &t.Revoked, &t.Hash); err != nil {
		return session.Token{}, err
	}
	t.Created = fromNanos(created)
	t.LastUsed = decodeTime(lastUsed)
	return t, nil
}

// CreateToken stores t; see [store.Store].
func (db *DB) CreateToken(ctx context.Context, t session.Token) error {
	if t.ID == "" || len(t.Hash) == 0 {
		return fmt.Errorf("create token %q: no id or no hash", t.ID)
	}
	if t.Created.IsZero() {
		t.Created = db.now()
	}
	var e encoder
	args := []any{t.ID, t.User, t.Name, e.time("created", t.Created), e.time("last used", t.LastUsed), t.Revoked, t.Hash}
	err := e.err
	if err == nil {
		_, err = db.db.ExecContext(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES ("+placeholders(1, 7)+")", args...)
	}
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create token %s: %w", t.ID, store.ErrExists)
	case isMissingRef(err):
		return fmt.Errorf("create token %s: user %s: %w", t.ID, t.User, store.ErrNotFound)
	}
	return fmt.Errorf("create token %s: %w", t.ID, err)
}

// stampWait bounds the LastUsed stamp's write: a good token must not wait
// on, or fail because of, a stamp (a lock held by an operator's psql, a
// slow server).
const stampWait = 200 * time.Millisecond

// TokenByHash returns the token whose Hash is hash if it is not revoked,
// and stamps its LastUsed with now (the DB's clock if zero), to the
// second. PostgreSQL readers never wait for writers, so the lookup needs
// no lock; the stamp is written in line within stampWait and, if it
// cannot be, logged and dropped.
func (db *DB) TokenByHash(ctx context.Context, hash []byte, now time.Time) (session.Token, error) {
	if now.IsZero() {
		now = db.now()
	}
	var e encoder
	stamp := e.time("now", now)
	if e.err != nil {
		return session.Token{}, fmt.Errorf("token by hash: %w", e.err)
	}
	if len(hash) == 0 {
		return session.Token{}, fmt.Errorf("token by hash: %w", store.ErrNotFound)
	}
	t, err := scanToken(db.db.QueryRowContext(ctx, tokenByHash, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.Token{}, fmt.Errorf("token by hash: %w", err)
	}
	if now.Sub(t.LastUsed) >= time.Second {
		t.LastUsed = now.UTC()
		sctx, cancel := context.WithTimeout(ctx, stampWait)
		if _, err := db.db.ExecContext(sctx, stampToken, stamp, t.ID); err != nil {
			db.log.WarnContext(ctx, "token last-used stamp not written; the token works regardless", "token", t.ID, "error", err)
		}
		cancel()
	}
	return t, nil
}

// ListTokens returns user's tokens, revoked ones too, newest first.
func (db *DB) ListTokens(ctx context.Context, user string) ([]session.Token, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+tokenCols+" FROM tokens WHERE username = $1 ORDER BY created DESC, id DESC", user)
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", user, err)
	}
	defer rows.Close()
	var out []session.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens of %s: %w", user, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", user, err)
	}
	return out, nil
}

// RevokeToken revokes user's token id; an error wrapping
// [store.ErrNotFound] if user has no such token.
func (db *DB) RevokeToken(ctx context.Context, user, id string) error {
	if notText(user, id) {
		return fmt.Errorf("revoke token %q: %w", id, store.ErrNotFound)
	}
	res, err := db.db.ExecContext(ctx, "UPDATE tokens SET revoked = true WHERE username = $1 AND id = $2", user, id)
	if err == nil {
		err = affectedOne(res)
	}
	if err != nil {
		return fmt.Errorf("revoke token %s of %s: %w", id, user, err)
	}
	return nil
}
