// Package sqlite is the gateway's embedded store: a [store.Store] in one
// SQLite file, through the pure-Go modernc.org/sqlite driver so the binary
// stays CGO_ENABLED=0. It owns the file's schema, migrates it forward on
// [Open] and refuses a file written by a newer airlock.
//
// It knows only the session package's types; it must not import the
// gateway, the runner, backends, auth or the seal, and it holds no policy
// (limits, who may see what): that is the gateway's.
//
// Writes go through one connection, so the gateway's goroutines queue in
// database/sql rather than failing with SQLITE_BUSY; reads use a pool of
// read-only connections that WAL lets run beside the writer.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/airlock-hpc/airlock/internal/store"
)

var _ store.Store = (*DB)(nil)

// ErrNewerSchema is wrapped by the error [Open] returns for a file whose
// schema is newer than this build knows: running an older airlock on it
// could drop or misread what the newer one stored, so it is refused.
var ErrNewerSchema = errors.New("schema is newer than this airlock")

// Config configures [Open]. Only Path is required.
type Config struct {
	// Path is the database file, created if missing. SQLite keeps its
	// -wal and -shm files beside it, so its directory must be writable.
	Path string
	// Now is the clock for times the caller left zero (a session's, user's,
	// token's or share's Created, an audit event's Time, the now given to
	// TokenByHash) and for when a migration ran. Default time.Now.
	Now func() time.Time
	// Logger receives schema migrations and warnings. Default
	// slog.Default().
	Logger *slog.Logger
	// BusyTimeout is how long a statement waits for a lock another process
	// holds (a second airlock on the same file, an operator's sqlite3
	// shell) before failing. This process's own writers never wait on
	// each other in SQLite: they queue for the one write connection.
	// Default 5s.
	BusyTimeout time.Duration
	// Readers caps the read-only connections used at once. Default
	// max(4, GOMAXPROCS).
	Readers int
}

// DB is a [store.Store] in one SQLite file. It is safe for concurrent use.
// Open it with [Open]; Close releases the file.
type DB struct {
	path string
	now  func() time.Time
	log  *slog.Logger

	// write has exactly one connection and every write goes through it,
	// each transaction starting with BEGIN IMMEDIATE (the DSN's _txlock):
	// SQLite allows one writer at a time anyway, and taking the write lock
	// up front means a read-modify-write never has to upgrade a read lock,
	// the case where SQLite returns SQLITE_BUSY without waiting.
	write *sql.DB
	// read holds query_only connections. Under WAL they read a snapshot
	// and neither block nor wait for the writer, so listing sessions stays
	// fast while runners report state changes.
	read *sql.DB

	// Statements of the per-request paths, prepared once: parsing costs
	// about as much as running a lookup by key. database/sql prepares each
	// again on every connection it runs on, once.
	stmt struct {
		getSession    *sql.Stmt // read
		lockSession   *sql.Stmt // write: UpdateSession's read
		updateSession *sql.Stmt // write
		insertSession *sql.Stmt // write
		tokenByHash   *sql.Stmt // read; the LastUsed stamp goes through stamps
	}
	stamps stamper

	closed atomic.Bool
}

// Open opens the database at cfg.Path, creating it if needed, and applies
// any schema migrations this build has that the file lacks, each in its
// own transaction. A file whose schema is newer than this build's is
// refused with an error wrapping [ErrNewerSchema] and left untouched.
// ctx bounds opening and migrating, not the DB's life.
func Open(ctx context.Context, cfg Config) (_ *DB, err error) {
	if cfg.Path == "" {
		return nil, errors.New("open store: no path")
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Path, err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("open store %s: %w", abs, err)
		}
	}()
	if cfg.BusyTimeout < 0 || cfg.Readers < 0 {
		return nil, errors.New("negative BusyTimeout or Readers")
	}
	db := &DB{
		path: abs,
		now:  cfg.Now,
		log:  cmp.Or(cfg.Logger, slog.Default()).With("component", "store", "path", abs),
	}
	if cfg.Now == nil {
		db.now = time.Now
	}
	busy := cmp.Or(cfg.BusyTimeout, 5*time.Second)
	readers := cmp.Or(cfg.Readers, max(4, runtime.GOMAXPROCS(0)))

	db.write, err = sql.Open("sqlite", dsn(abs, busy, true))
	if err != nil {
		return nil, err
	}
	db.write.SetMaxOpenConns(1)
	db.write.SetMaxIdleConns(1)
	// Keep the connection for the DB's life: reopening it would redo the
	// PRAGMAs and drop SQLite's page cache for nothing.
	db.write.SetConnMaxLifetime(0)
	db.write.SetConnMaxIdleTime(0)
	defer func() {
		if err != nil {
			db.write.Close()
		}
	}()
	// The first connection creates the file and switches it to WAL, and
	// must do so before any reader opens it.
	if err := db.write.PingContext(ctx); err != nil {
		return nil, err
	}
	var mode string
	if err := db.write.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, err
	}
	if !strings.EqualFold(mode, "wal") {
		// SQLite keeps the old mode where WAL cannot work (a network file
		// system without shared memory). The store still works; readers and
		// the writer just take turns.
		db.log.WarnContext(ctx, "database is not in WAL mode; reads and writes will block each other", "journal_mode", mode)
	}
	if err := db.migrate(ctx); err != nil {
		return nil, err
	}

	db.read, err = sql.Open("sqlite", dsn(abs, busy, false))
	if err != nil {
		return nil, err
	}
	db.read.SetMaxOpenConns(readers)
	db.read.SetMaxIdleConns(readers)
	db.read.SetConnMaxLifetime(0)
	db.read.SetConnMaxIdleTime(0)
	if err := db.read.PingContext(ctx); err != nil {
		db.read.Close()
		return nil, err
	}
	if err := db.prepare(ctx); err != nil {
		db.read.Close()
		return nil, err
	}
	return db, nil
}

// prepare prepares db.stmt, after the migrations made what they name.
func (db *DB) prepare(ctx context.Context) error {
	for _, p := range []struct {
		to *(*sql.Stmt)
		on *sql.DB
		q  string
	}{
		{&db.stmt.getSession, db.read, selectSession + " WHERE id = ?"},
		{&db.stmt.lockSession, db.write, selectSession + " WHERE id = ?"},
		{&db.stmt.updateSession, db.write, updateSession},
		{&db.stmt.insertSession, db.write, insertSession},
		{&db.stmt.tokenByHash, db.read, tokenByHash},
	} {
		st, err := p.on.PrepareContext(ctx, p.q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.q, err)
		}
		*p.to = st
	}
	return nil
}

// dsn is the driver's name for a connection to the file at abs. Each
// connection database/sql opens runs these PRAGMAs first, since most are
// per connection, not per file:
//
//   - busy_timeout: another process may hold the write lock for a moment;
//     wait for it rather than fail at once. modernc runs it before the
//     others, which may themselves need a lock.
//   - foreign_keys(1): SQLite leaves foreign keys unchecked unless asked,
//     per connection; with them a share cannot name a missing session.
//   - journal_mode(WAL): readers don't block the writer nor it them, so
//     the session list is read while runners report. Persistent in the
//     file; on a reader it only confirms what the writer set.
//   - synchronous(NORMAL): in WAL mode a commit then needs no fsync and
//     stays durable across a crash of the process; only a power loss can
//     undo the last commits, never corrupt the file. FULL would fsync
//     the WAL on every runner report.
//
// Through the driver's own keys: _defensive turns off what only corrupts a
// database (writable_schema and friends), which nothing here needs;
// _txlock=immediate makes the writer's transactions take the write lock at
// BEGIN; _query_only makes a reader refuse to write, so a write sent to the
// read pool by mistake fails loudly instead of racing the writer.
func dsn(abs string, busy time.Duration, writer bool) string {
	q := []string{
		"_pragma=busy_timeout(" + strconv.FormatInt(busy.Milliseconds(), 10) + ")",
		"_pragma=foreign_keys(1)",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		"_defensive=1",
	}
	if writer {
		q = append(q, "_txlock=immediate")
	} else {
		q = append(q, "_query_only=1")
	}
	// A file: URI lets the query carry the parameters; SQLite decodes %XX
	// in its path, so the three characters that would end or mangle the
	// path are escaped.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
	return "file:" + esc + "?" + strings.Join(q, "&")
}

// Close closes the database. It waits for statements in progress. A second
// call returns an error wrapping net.ErrClosed.
func (db *DB) Close() error {
	if !db.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("close store %s: %w", db.path, net.ErrClosed)
	}
	// database/sql would close the statements with their connections; this
	// is only tidier.
	for _, st := range []*sql.Stmt{db.stmt.getSession, db.stmt.lockSession, db.stmt.updateSession, db.stmt.insertSession, db.stmt.tokenByHash} {
		st.Close()
	}
	if err := errors.Join(db.read.Close(), db.write.Close()); err != nil {
		return fmt.Errorf("close store %s: %w", db.path, err)
	}
	return nil
}

// The schema, one file per version. A file is named NNNN_what.sql; its
// number is its version, and the versions run 1, 2, 3… with no gaps. A
// file, once released, is never edited: a change is a new file.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

// migrations returns the embedded migrations in order, checking their
// names and numbering.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_what.sql", base)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	for i, m := range ms {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("migration %s: version %d, want %d", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// migrate brings the schema up to the newest embedded version.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name    TEXT NOT NULL,
		applied INTEGER NOT NULL -- unix nanoseconds
	) STRICT`
	if _, err := db.write.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var have int64
	if err := db.write.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&have); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if known := ms[len(ms)-1].version; have > known {
		return fmt.Errorf("schema version %d, this airlock knows up to %d; use the newer airlock (an older one could lose data): %w", have, known, ErrNewerSchema)
	}
	for _, m := range ms {
		if m.version <= have {
			continue
		}
		if err := db.apply(ctx, m); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// apply runs one migration and records it, in one transaction, unless
// another process applied it since migrate looked.
func (db *DB) apply(ctx context.Context, m migration) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
		m.version, m.name, db.now().UnixNano()); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.log.InfoContext(ctx, "applied schema migration", "version", m.version, "name", m.name)
	return nil
}

// constraint returns the extended SQLite result code of a violated
// constraint in err, or 0.
func constraint(err error) int {
	if e, ok := errors.AsType[*sqlitedrv.Error](err); ok && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return e.Code()
	}
	return 0
}

// isExists reports whether err is a violated primary key or UNIQUE
// constraint: the row, or one with the same secret hash, is already there.
func isExists(err error) bool {
	c := constraint(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// isMissingRef reports whether err is a violated foreign key: the row
// names a user or session that is not there.
func isMissingRef(err error) bool {
	return constraint(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// Times are stored as INTEGER unix nanoseconds in UTC, which keeps every
// bit of a Go time (less its zone, which the store does not promise to
// keep) and sorts and compares as a number in indexes. The zero time is
// NULL. An int64 of nanoseconds spans the years 1677 to 2262; a time
// outside that is refused, not clamped.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// encoder converts a row's Go values to column values and keeps the first
// error, so a row's columns read as one list.
type encoder struct{ err error }

// time returns t as unix nanoseconds, or nil for the zero time.
func (e *encoder) time(field string, t time.Time) any {
	if t.IsZero() {
		return nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		if e.err == nil {
			e.err = fmt.Errorf("%s %s: outside the years 1677 to 2262 the store can hold", field, t.Format(time.RFC3339Nano))
		}
		return nil
	}
	return t.UnixNano()
}

// decodeTime is the inverse of encoder.time; times come back in UTC.
func decodeTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}

// fromNanos decodes a NOT NULL time column.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// b2i stores a bool in a STRICT INTEGER column.
func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// placeholders returns "?, ?, …", n of them.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }
