package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// sessionCols are the sessions columns in the order sessionArgs and
// scanSession use; id first so an UPDATE can set the rest.
var sessionCols = []string{
	"id", "owner", "profile", "state", "reason", "persistent", "cpus", "memory_mb", "lifetime",
	"created", "started", "ended", "last_seen", "backend", "backend_ref", "node", "endpoints", "tls_sha256",
}

var (
	selectSession = "SELECT " + strings.Join(sessionCols, ", ") + " FROM sessions"
	insertSession = "INSERT INTO sessions (" + strings.Join(sessionCols, ", ") + ") VALUES (" + placeholders(1, len(sessionCols)) + ")"
	// The new values are $1…$17 and the id $18, matching append(args[1:], id).
	updateSession = "UPDATE sessions SET (" + strings.Join(sessionCols[1:], ", ") + ") = (" + placeholders(1, len(sessionCols)-1) + ") WHERE id = $" + strconv.Itoa(len(sessionCols))
)

// sessionArgs returns s's column values in sessionCols order, stamping a
// zero Created with now and putting s's times in UTC, so s then reads as
// GetSession would return it.
func (db *DB) sessionArgs(s *session.Session) ([]any, error) {
	if !s.State.Valid() {
		return nil, fmt.Errorf("state %q: not a session state", s.State)
	}
	if s.Created.IsZero() {
		s.Created = db.now()
	}
	s.Created, s.Started, s.Ended, s.LastSeen = s.Created.UTC(), s.Started.UTC(), s.Ended.UTC(), s.LastSeen.UTC()
	var endpoints any
	if s.Endpoints != nil {
		b, err := json.Marshal(s.Endpoints)
		if err != nil {
			return nil, fmt.Errorf("endpoints: %w", err)
		}
		endpoints = string(b)
	}
	var e encoder
	args := []any{
		s.ID, s.Owner, s.Profile, string(s.State), s.Reason, s.Persistent, s.CPUs, s.MemoryMB, int64(s.Lifetime),
		e.time("created", s.Created), e.time("started", s.Started), e.time("ended", s.Ended), e.time("last seen", s.LastSeen),
		s.Backend, s.BackendRef, s.Node, endpoints, s.TLSSHA256,
	}
	return args, e.err
}

func scanSession(r rowScanner) (*session.Session, error) {
	var (
		s                        session.Session
		state                    string
		lifetime, created        int64
		started, ended, lastSeen sql.NullInt64
		endpoints                sql.NullString
	)
	err := r.Scan(&s.ID, &s.Owner, &s.Profile, &state, &s.Reason, &s.Persistent, &s.CPUs, &s.MemoryMB, &lifetime,
		&created, &started, &ended, &lastSeen, &s.Backend, &s.BackendRef, &s.Node, &endpoints, &s.TLSSHA256)
	if err != nil {
		return nil, err
	}
	s.State = session.State(state)
	s.Lifetime = time.Duration(lifetime)
	s.Created = fromNanos(created)
	s.Started, s.Ended, s.LastSeen = decodeTime(started), decodeTime(ended), decodeTime(lastSeen)
	if endpoints.Valid && endpoints.String != "" {
		if err := json.Unmarshal([]byte(endpoints.String), &s.Endpoints); err != nil {
			return nil, fmt.Errorf("endpoints column: %w", err)
		}
	}
	return &s, nil
}

// CreateSession stores s; see [store.Store]. It refuses an empty id, a
// state that is not session's, and times outside the years 1677 to 2262.
func (db *DB) CreateSession(ctx context.Context, s *session.Session) error {
	if s == nil || s.ID == "" {
		return errors.New("create session: no id")
	}
	args, err := db.sessionArgs(s)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	_, err = db.db.ExecContext(ctx, insertSession, args...)
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create session %s: %w", s.ID, store.ErrExists)
	}
	return fmt.Errorf("create session %s: %w", s.ID, err)
}

// limitLock is the advisory lock key CreateSessionWithin counts and
// inserts under. Under READ COMMITTED two transactions could each count
// n-1 and both insert; the lock makes the count-and-insert of every
// gateway on the database take turns, and it goes with the transaction.
const limitLock int64 = 0x6169726c6f636b02

// CreateSessionWithin is [DB.CreateSession] within lim, the count and the
// insert one step across every gateway on the database.
func (db *DB) CreateSessionWithin(ctx context.Context, s *session.Session, lim store.Limits) error {
	if s == nil || s.ID == "" {
		return errors.New("create session: no id")
	}
	args, err := db.sessionArgs(s)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if lim.MaxActive > 0 || lim.MaxActivePerOwner > 0 {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", limitLock); err != nil {
				return err
			}
		}
		for _, c := range []struct {
			max      int
			perOwner bool
			q        string
			args     []any
		}{
			{lim.MaxActive, false, countActive, nil},
			{lim.MaxActivePerOwner, true, countActiveOwner, []any{s.Owner}},
		} {
			if c.max <= 0 {
				continue
			}
			var n int
			if err := tx.QueryRowContext(ctx, c.q, c.args...).Scan(&n); err != nil {
				return fmt.Errorf("count active sessions: %w", err)
			}
			if n >= c.max {
				return &store.LimitError{PerOwner: c.perOwner, Max: c.max, Active: n}
			}
		}
		_, err := tx.ExecContext(ctx, insertSession, args...)
		return err
	})
	if isExists(err) {
		err = store.ErrExists
	}
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	return nil
}

// GetSession returns the session with id, or an error wrapping
// [store.ErrNotFound].
func (db *DB) GetSession(ctx context.Context, id string) (*session.Session, error) {
	if notText(id) {
		return nil, fmt.Errorf("get session %q: %w", id, store.ErrNotFound)
	}
	s, err := scanSession(db.db.QueryRowContext(ctx, selectSession+" WHERE id = $1", id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return s, nil
}

// ListSessions returns the sessions matching f, newest Created first, ties
// broken by id, descending.
func (db *DB) ListSessions(ctx context.Context, f store.SessionFilter) ([]*session.Session, error) {
	var (
		q     strings.Builder
		args  []any
		where = " WHERE "
	)
	if notText(f.Owner) {
		return nil, nil // nobody's
	}
	q.WriteString(selectSession)
	if f.Owner != "" {
		args = append(args, f.Owner)
		q.WriteString(where + "owner = $1")
		where = " AND "
	}
	if len(f.States) > 0 {
		q.WriteString(where + "state IN (" + placeholders(len(args)+1, len(f.States)) + ")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	q.WriteString(" ORDER BY created DESC, id DESC")
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q.WriteString(" LIMIT $" + strconv.Itoa(len(args)))
	}
	rows, err := db.db.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []*session.Session
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// UpdateSession reads the session with id under a row lock (SELECT … FOR
// UPDATE), calls update on it and writes it back in one transaction, so
// updates of one session from any gateway apply one after the other and
// none is lost; other sessions are not held up. What is refused, and
// left unwritten, is as in [store.Store]. update must not call the store.
func (db *DB) UpdateSession(ctx context.Context, id string, update func(*session.Session) error) (*session.Session, error) {
	if notText(id) {
		return nil, fmt.Errorf("update session %q: %w", id, store.ErrNotFound)
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	defer tx.Rollback()
	s, err := scanSession(tx.QueryRowContext(ctx, selectSession+" WHERE id = $1 FOR UPDATE", id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	from := s.State
	if err := update(s); err != nil {
		return nil, err
	}
	if s.ID != id {
		return nil, fmt.Errorf("update session %s: id changed to %q", id, s.ID)
	}
	if s.State != from && !from.CanMoveTo(s.State) {
		return nil, fmt.Errorf("update session %s: from %s to %s: %w", id, from, s.State, store.ErrConflict)
	}
	args, err := db.sessionArgs(s)
	if err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, updateSession, append(args[1:], id)...); err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	return s, nil
}

// The literal 'ended' matches the partial index sessions_active_owner's
// predicate, which the planner needs to see to use it.
const (
	countActive      = "SELECT count(*) FROM sessions WHERE state <> 'ended'"
	countActiveOwner = countActive + " AND owner = $1"
)

// CountActive counts the sessions not Ended, of owner or of everyone.
func (db *DB) CountActive(ctx context.Context, owner string) (int, error) {
	if notText(owner) {
		return 0, nil
	}
	q, args := countActive, []any(nil)
	if owner != "" {
		q, args = countActiveOwner, []any{owner}
	}
	var n int
	if err := db.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		if owner == "" {
			return 0, fmt.Errorf("count active sessions: %w", err)
		}
		return 0, fmt.Errorf("count active sessions of %s: %w", owner, err)
	}
	return n, nil
}
