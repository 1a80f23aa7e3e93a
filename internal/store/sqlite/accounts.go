package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// CreateUser adds u. A zero u.Created is stored as the DB's clock. It
// returns an error wrapping [store.ErrExists] if the name is taken, and
// refuses an empty name.
func (db *DB) CreateUser(ctx context.Context, u session.User) error {
	if u.Name == "" {
		return errors.New("create user: no name")
	}
	if u.Created.IsZero() {
		u.Created = db.now()
	}
	var e encoder
	args := []any{u.Name, b2i(u.Admin), e.time("created", u.Created), u.Method, strings.Join(u.Groups, "\n"), u.Email}
	err := e.err
	if err == nil {
		_, err = db.write.ExecContext(ctx, "INSERT INTO users (name, admin, created, method, user_groups, email) VALUES (?, ?, ?, ?, ?, ?)", args...)
	}
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create user %s: %w", u.Name, store.ErrExists)
	}
	return fmt.Errorf("create user %s: %w", u.Name, err)
}

// PutUser adds u or, if the name is taken, sets its admin flag, method
// and groups (keeping the stored Created). A zero u.Created is the DB's clock.
func (db *DB) PutUser(ctx context.Context, u session.User) error {
	if u.Name == "" {
		return errors.New("put user: no name")
	}
	if u.Created.IsZero() {
		u.Created = db.now()
	}
	var e encoder
	args := []any{u.Name, b2i(u.Admin), e.time("created", u.Created), u.Method, strings.Join(u.Groups, "\n"), u.Email}
	err := e.err
	if err == nil {
		_, err = db.write.ExecContext(ctx, `INSERT INTO users (name, admin, created, method, user_groups, email) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET admin = excluded.admin, method = excluded.method, user_groups = excluded.user_groups,
				email = excluded.email`, args...)
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
		admin   int64
		created int64
		groups  string
	)
	if err := r.Scan(&u.Name, &admin, &created, &u.Method, &groups, &u.Email); err != nil {
		return session.User{}, err
	}
	if groups != "" {
		u.Groups = strings.Split(groups, "\n")
	}
	u.Admin = admin != 0
	u.Created = fromNanos(created)
	return u, nil
}

// GetUser returns the user called name, or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetUser(ctx context.Context, name string) (session.User, error) {
	u, err := scanUser(db.read.QueryRowContext(ctx, selectUser+" WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.User{}, fmt.Errorf("get user %s: %w", name, err)
	}
	return u, nil
}

// ListUsers returns every user, by name.
func (db *DB) ListUsers(ctx context.Context) ([]session.User, error) {
	rows, err := db.read.QueryContext(ctx, selectUser+" ORDER BY name")
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
	tokenByHash = "SELECT " + tokenCols + " FROM tokens WHERE hash = ? AND revoked = 0"
	stampToken  = "UPDATE tokens SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)"
)

func scanToken(r rowScanner) (session.Token, error) {
	var (
		t        session.Token
		created  int64
		lastUsed sql.NullInt64
		revoked  int64
	)
	if err := r.Scan(&t.ID, &t.User, &t.Name, &created, &lastUsed, &revoked, &t.Hash); err != nil {
		return session.Token{}, err
	}
	t.Created = fromNanos(created)
	t.LastUsed = decodeTime(lastUsed)
	t.Revoked = revoked != 0
	return t, nil
}

// CreateToken stores t, whose Hash is the lookup key. A zero t.Created is
// stored as the DB's clock. It returns an error wrapping [store.ErrExists]
// if the id or the hash is taken, one wrapping [store.ErrNotFound] if
// t.User is not a user, and refuses an empty id or hash.
func (db *DB) CreateToken(ctx context.Context, t session.Token) error {
	if t.ID == "" || len(t.Hash) == 0 {
		return fmt.Errorf("create token %q: no id or no hash", t.ID)
	}
	if t.Created.IsZero() {
		t.Created = db.now()
	}
	var e encoder
	args := []any{t.ID, t.User, t.Name, e.time("created", t.Created), e.time("last used", t.LastUsed), b2i(t.Revoked), t.Hash}
	err := e.err
	if err == nil {
		_, err = db.write.ExecContext(ctx, "INSERT INTO tokens ("+tokenCols+") VALUES ("+placeholders(7)+")", args...)
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

// TokenByHash returns the token whose Hash is hash if it is not revoked,
// and stamps its LastUsed with now (the DB's clock if now is zero). A
// revoked or unknown token is an error wrapping [store.ErrNotFound], and is
// not stamped. The error does not name the hash, which is as good as the
// secret to anyone who can query the store.
//
// The lookup runs on a read connection, which WAL lets proceed while
// another process holds the write lock, so a busy database never turns a
// good token away. The stamp is a write: it is queued for a background
// writer (see stamper) and waited for only briefly, so it is visible at
// once when the database is free and never fails or holds up the caller
// when it is not. Stamps are kept to the second: a lookup within a second
// of the stored LastUsed writes nothing.
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
	t, err := scanToken(db.stmt.tokenByHash.QueryRowContext(ctx, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return session.Token{}, fmt.Errorf("token by hash: %w", err)
	}
	if now.Sub(t.LastUsed) >= time.Second {
		t.LastUsed = now.UTC()
		done := db.stamps.add(db, t.ID, stamp.(int64))
		wait := time.NewTimer(stampWait)
		select {
		case <-done:
		case <-wait.C:
		case <-ctx.Done():
		}
		wait.Stop()
	}
	return t, nil
}

// stampWait is how long TokenByHash waits for its stamp to be written: far
// longer than a free database takes, far shorter than its busy timeout.
const stampWait = 200 * time.Millisecond

// stamper writes tokens' LastUsed stamps in the background, one batch at a
// time, newest stamp per token: however many lookups arrive while the
// database is locked, they wait on one batch, not in a queue of writes.
type stamper struct {
	mu      sync.Mutex
	pending map[string]int64 // token id → unix nanoseconds
	done    chan struct{}    // closed once the batch holding pending is written (or failed)
	running bool
}

// add queues a stamp and returns a channel closed once it has been tried.
func (s *stamper) add(db *DB, id string, at int64) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending, s.done = map[string]int64{}, make(chan struct{})
	}
	s.pending[id] = max(s.pending[id], at)
	done := s.done
	if !s.running {
		s.running = true
		go s.run(db)
	}
	return done
}

func (s *stamper) run(db *DB) {
	for {
		s.mu.Lock()
		batch, done := s.pending, s.done
		s.pending, s.done = nil, nil
		if len(batch) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := db.writeStamps(batch); err != nil {
			db.log.Warn("token last-used stamps not written; the tokens work regardless", "tokens", len(batch), "error", err)
		}
		close(done)
	}
}

func (db *DB) writeStamps(batch map[string]int64) error {
	if db.closed.Load() {
		return net.ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("stamp tokens: %w", err)
	}
	defer tx.Rollback()
	for id, at := range batch {
		if _, err := tx.ExecContext(ctx, stampToken, at, id, at); err != nil {
			return fmt.Errorf("stamp token %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("stamp tokens: %w", err)
	}
	return nil
}

// ListTokens returns user's tokens, revoked ones too, newest first. An
// unknown user has none.
func (db *DB) ListTokens(ctx context.Context, user string) ([]session.Token, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+tokenCols+" FROM tokens WHERE username = ? ORDER BY created DESC, id DESC", user)
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

// RevokeToken revokes user's token id. Revoking a revoked token succeeds.
// It returns an error wrapping [store.ErrNotFound] if user has no token
// id, another user's included.
func (db *DB) RevokeToken(ctx context.Context, user, id string) error {
	res, err := db.write.ExecContext(ctx, "UPDATE tokens SET revoked = 1 WHERE username = ? AND id = ?", user, id)
	if err == nil {
		err = affectedOne(res)
	}
	if err != nil {
		return fmt.Errorf("revoke token %s of %s: %w", id, user, err)
	}
	return nil
}

// affectedOne returns an error wrapping [store.ErrNotFound] unless res
// changed a row.
func affectedOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
