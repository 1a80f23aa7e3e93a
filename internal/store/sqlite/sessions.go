package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// sessionCols are the sessions columns in the order sessionArgs and
// scanSession use; id comes first so an UPDATE can set the rest.
var sessionCols = []string{
	"id", "owner", "profile", "state", "reason", "persistent", "cpus", "memory_mb", "lifetime",
	"created", "started", "ended", "last_seen", "backend", "backend_ref", "node", "endpoints", "tls_sha256",
}

var (
	selectSession = "SELECT " + strings.Join(sessionCols, ", ") + " FROM sessions"
	insertSession = "INSERT INTO sessions (" + strings.Join(sessionCols, ", ") + ") VALUES (" + placeholders(len(sessionCols)) + ")"
	updateSession = "UPDATE sessions SET (" + strings.Join(sessionCols[1:], ", ") + ") = (" + placeholders(len(sessionCols)-1) + ") WHERE id = ?"
)

// sessionArgs returns s's column values in sessionCols order. It stamps a
// zero Created with now and puts s's times in UTC, so that s then reads
// exactly as GetSession would return it.
func (db *DB) sessionArgs(s *session.Session) ([]any, error) {
	if !s.State.Valid() {
		return nil, fmt.Errorf("state %q: not a session state", s.State)
	}
	if s.Created.IsZero() {
		s.Created = db.now()
	}
	s.Created, s.Started, s.Ended, s.LastSeen = s.Created.UTC(), s.Started.UTC(), s.Ended.UTC(), s.LastSeen.UTC()
	// A nil map is NULL and an empty one "{}", so both read back as they
	// went in.
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
		s.ID, s.Owner, s.Profile, string(s.State), s.Reason, b2i(s.Persistent), s.CPUs, s.MemoryMB, int64(s.Lifetime),
		e.time("created", s.Created), e.time("started", s.Started), e.time("ended", s.Ended), e.time("last seen", s.LastSeen),
		s.Backend, s.BackendRef, s.Node, endpoints, s.TLSSHA256,
	}
	return args, e.err
}

// scanSession reads one row of selectSession.
func scanSession(r rowScanner) (*session.Session, error) {
	var (
		s                        session.Session
		state                    string
		persistent, lifetime     int64
		created                  int64
		started, ended, lastSeen sql.NullInt64
		endpoints                sql.NullString
	)
	err := r.Scan(&s.ID, &s.Owner, &s.Profile, &state, &s.Reason, &persistent, &s.CPUs, &s.MemoryMB, &lifetime,
		&created, &started, &ended, &lastSeen, &s.Backend, &s.BackendRef, &s.Node, &endpoints, &s.TLSSHA256)
	if err != nil {
		return nil, err
	}
	s.State = session.State(state)
	s.Persistent = persistent != 0
	s.Lifetime = time.Duration(lifetime)
	s.Created = fromNanos(created)
	s.Started, s.Ended, s.LastSeen = decodeTime(started), decodeTime(ended), decodeTime(lastSeen)
	// NULL and "" both mean no endpoints: a row written by hand or by a
	// future migration's default must not make the session unreadable.
	if endpoints.Valid && endpoints.String != "" {
		if err := json.Unmarshal([]byte(endpoints.String), &s.Endpoints); err != nil {
			return nil, fmt.Errorf("endpoints column: %w", err)
		}
	}
	return &s, nil
}

// CreateSession stores s. A zero s.Created is set to the DB's clock, and
// s's times are put in UTC, as GetSession will return them. It returns an
// error wrapping [store.ErrExists] if the id is taken, and refuses an
// empty id, a state that is not one of session's, and times outside the
// years 1677 to 2262.
func (db *DB) CreateSession(ctx context.Context, s *session.Session) error {
	if s == nil || s.ID == "" {
		return errors.New("create session: no id")
	}
	args, err := db.sessionArgs(s)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	_, err = db.stmt.insertSession.ExecContext(ctx, args...)
	switch {
	case err == nil:
		return nil
	case isExists(err):
		return fmt.Errorf("create session %s: %w", s.ID, store.ErrExists)
	}
	return fmt.Errorf("create session %s: %w", s.ID, err)
}

// CreateSessionWithin is [DB.CreateSession] within lim: it counts the
// active sessions and inserts s in one transaction on the write
// connection, which holds SQLite's write lock from its start (BEGIN
// IMMEDIATE), so no other insert or state change can come between the
// count and the insert. It returns a [*store.LimitError] if s would go
// past a cap, and then writes nothing.
func (db *DB) CreateSessionWithin(ctx context.Context, s *session.Session, lim store.Limits) error {
	if s == nil || s.ID == "" {
		return errors.New("create session: no id")
	}
	args, err := db.sessionArgs(s)
	if err != nil {
		return fmt.Errorf("create session %s: %w", s.ID, err)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
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
		_, err := tx.StmtContext(ctx, db.stmt.insertSession).ExecContext(ctx, args...)
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
// [store.ErrNotFound]. Its times are in UTC.
func (db *DB) GetSession(ctx context.Context, id string) (*session.Session, error) {
	s, err := scanSession(db.stmt.getSession.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return s, nil
}

// ListSessions returns the sessions matching f, newest Created first, ties
// broken by id, descending. A Limit of 0 or less means no limit.
func (db *DB) ListSessions(ctx context.Context, f store.SessionFilter) ([]*session.Session, error) {
	q, args := listSessionsQuery(f)
	rows, err := db.read.QueryContext(ctx, q, args...)
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

// listSessionsQuery returns ListSessions' query for f and its arguments.
func listSessionsQuery(f store.SessionFilter) (string, []any) {
	var (
		q     strings.Builder
		args  []any
		where = " WHERE "
	)
	q.WriteString(selectSession)
	if f.Owner != "" {
		q.WriteString(where + "owner = ?")
		args = append(args, f.Owner)
		where = " AND "
	}
	if len(f.States) > 0 {
		q.WriteString(where + "state IN (" + placeholders(len(f.States)) + ")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	// The indexes end in (created DESC, id DESC), so this order needs no
	// sort and a LIMIT stops reading early.
	q.WriteString(" ORDER BY created DESC, id DESC")
	if f.Limit > 0 {
		q.WriteString(" LIMIT ?")
		args = append(args, f.Limit)
	}
	return q.String(), args
}

// UpdateSession reads the session with id, calls update on it and writes
// it back, in one transaction that holds the database's write lock
// throughout, so concurrent updates of one session apply one after the
// other and none is lost.
//
// Nothing is written, and the transaction is rolled back, if:
//   - there is no such session: an error wrapping [store.ErrNotFound],
//     and update is not called;
//   - update returns an error: that error, as it is;
//   - update changed the State to one the old state cannot move to
//     ([session.State.CanMoveTo]): an error wrapping [store.ErrConflict];
//   - update changed the ID, or wrote a value CreateSession would refuse.
//
// It returns the session as written, times in UTC.
//
// update runs while every other write to the store waits for it, so it
// must be quick and must not call the store itself: a write from update
// would wait for update to finish, forever (or until ctx ends).
func (db *DB) UpdateSession(ctx context.Context, id string, update func(*session.Session) error) (*session.Session, error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	defer tx.Rollback()
	s, err := scanSession(tx.StmtContext(ctx, db.stmt.lockSession).QueryRowContext(ctx, id))
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
	if _, err := tx.StmtContext(ctx, db.stmt.updateSession).ExecContext(ctx, append(args[1:], id)...); err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("update session %s: %w", id, err)
	}
	return s, nil
}

// The partial index sessions_active_owner holds only active sessions, so
// the counts read those, not the years of ended ones. SQLite keeps no
// statistics here to tell it that index is the small one, so INDEXED BY
// names it (and fails the query, rather than turn it into a scan, if the
// index is ever gone). The literal 'ended' must match the index's WHERE
// for SQLite to use it; a bound parameter would not.
const (
	countActive      = "SELECT count(*) FROM sessions INDEXED BY sessions_active_owner WHERE state <> 'ended'"
	countActiveOwner = countActive + " AND owner = ?"
)

// CountActive counts the sessions not Ended, of owner or, if owner is "",
// of everyone.
func (db *DB) CountActive(ctx context.Context, owner string) (int, error) {
	q, args := countActive, []any(nil)
	if owner != "" {
		q, args = countActiveOwner, []any{owner}
	}
	var n int
	if err := db.read.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		if owner == "" {
			return 0, fmt.Errorf("count active sessions: %w", err)
		}
		return 0, fmt.Errorf("count active sessions of %s: %w", owner, err)
	}
	return n, nil
}
