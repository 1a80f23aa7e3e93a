// Package postgres is the gateway's store for sites that run several
// gateways: a [store.Store] in a PostgreSQL database that every gateway
// opens, through jackc/pgx's database/sql driver (pure Go, so the binary
// stays CGO_ENABLED=0). It owns the database's schema, migrates it forward
// on [Open] under an advisory lock so gateways starting together migrate
// once, and refuses a schema written by a newer airlock.
//
// It behaves as the SQLite store does (the same conformance suite runs on
// both); what differs is how each keeps its promises: row locks (SELECT …
// FOR UPDATE) where SQLite takes its one write lock, a transaction-scoped
// advisory lock where a count and an insert must be one step.
//
// It knows only the session package's types and holds no policy.
package postgres

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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/airlock-hpc/airlock/internal/store"
)

var (
	_ store.Store  = (*DB)(nil)
	_ store.Leaser = (*DB)(nil)

	_ store.SharedSecrets = (*DB)(nil)
	_ store.Broadcaster   = (*DB)(nil)
	_ store.Spender       = (*DB)(nil)
	_ store.Handoffs      = (*DB)(nil)
)

// ErrNewerSchema is wrapped by the error [Open] returns for a database
// whose schema is newer than this build knows: an older airlock could
// drop or misread what the newer one stored.
var ErrNewerSchema = errors.New("schema is newer than this airlock")

// Config configures [Open]. Only DSN is required.
type Config struct {
	// DSN names the database, as a postgres:// URL or a libpq key=value
	// string ("host=/run/postgresql dbname=airlock"). The PG* environment
	// variables fill what it leaves out, as with psql.
	DSN string
	// Password, if set, overrides the DSN's and the environment's (the
	// config's password_file: it is never written in the DSN).
	Password string
	// Now is the clock for times the caller left zero. Default time.Now.
	Now func() time.Time
	// Logger receives schema migrations and warnings. Default
	// slog.Default().
	Logger *slog.Logger
	// MaxConns caps the connections this process opens. Default 16: a
	// gateway's requests mostly read one row, and the server's
	// max_connections (100 by default) is shared by every gateway.
	MaxConns int
}

// DB is a [store.Store] in a PostgreSQL database. It is safe for
// concurrent use; Close releases its connections.
type DB struct {
	name string // the DSN's host and database, never its password, for errors and logs
	now  func() time.Time
	log  *slog.Logger
	db   *sql.DB
	// conn is how to connect, for Listen's connection of its own.
	conn pgx.ConnConfig

	closed atomic.Bool
}

// migrateLock is the advisory lock key the migrations run under, so that
// gateways starting at once take turns; any constant unlikely to collide
// with a site's own advisory locks on the same database.
const migrateLock int64 = 0x6169726c6f636b01 // "airlock" 01

// Open connects to cfg.DSN and applies any schema migrations this build
// has that the database lacks, each in its own transaction, all under one
// advisory lock. A schema newer than this build's is refused with an
// error wrapping [ErrNewerSchema]. ctx bounds opening and migrating.
func Open(ctx context.Context, cfg Config) (_ *DB, err error) {
	if cfg.DSN == "" {
		return nil, errors.New("open store: no PostgreSQL DSN")
	}
	pc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's parse errors quote the DSN, password and all.
		return nil, errors.New("open store: the PostgreSQL DSN does not parse")
	}
	if cfg.Password != "" {
		pc.Password = cfg.Password
	}
	name := fmt.Sprintf("postgres %s:%d/%s", pc.Host, pc.Port, pc.Database)
	defer func() {
		if err != nil {
			err = fmt.Errorf("open store %s: %w", name, err)
		}
	}()
	if cfg.MaxConns < 0 {
		return nil, errors.New("negative MaxConns")
	}
	db := &DB{
		name: name,
		now:  cfg.Now,
		log:  cmp.Or(cfg.Logger, slog.Default()).With("component", "store", "database", name),
	}
	if cfg.Now == nil {
		db.now = time.Now
	}
	db.conn = *pc
	db.db = stdlib.OpenDB(*pc)
	conns := cmp.Or(cfg.MaxConns, 16)
	db.db.SetMaxOpenConns(conns)
	db.db.SetMaxIdleConns(conns)
	// A server restart or a failover breaks every connection; recycling
	// them now and then also spreads them again behind a pooler.
	db.db.SetConnMaxLifetime(30 * time.Minute)
	defer func() {
		if err != nil {
			db.db.Close()
		}
	}()
	if err := db.db.PingContext(ctx); err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		return nil, err
	}
	return db, nil
}

// Close closes the connections, waiting for statements in progress. A
// second call returns an error wrapping net.ErrClosed.
func (db *DB) Close() error {
	if !db.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("close store %s: %w", db.name, net.ErrClosed)
	}
	if err := db.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", db.name, err)
	}
	return nil
}

// The schema, one file per version, NNNN_what.sql, numbered 1, 2, 3…
// with no gaps. A released file is never edited: a change is a new file.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

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

// migrate brings the schema up to the newest embedded version. It holds a
// session advisory lock on one connection throughout, so a second gateway
// starting at the same moment waits and then finds nothing to do.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return fmt.Errorf("lock for migrations: %w", err)
	}
	defer func() {
		// A fresh context: the lock must go even if ctx ended; were the
		// unlock to fail, closing the connection below releases it too.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.ExecContext(uctx, "SELECT pg_advisory_unlock($1)", migrateLock)
	}()
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY,
		name    TEXT NOT NULL,
		applied BIGINT NOT NULL -- unix nanoseconds
	)`
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var have int64
	if err := conn.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&have); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if known := ms[len(ms)-1].version; have > known {
		return fmt.Errorf("schema version %d, this airlock knows up to %d; use the newer airlock (an older one could lose data): %w", have, known, ErrNewerSchema)
	}
	for _, m := range ms {
		if m.version <= have {
			continue
		}
		if err := db.apply(ctx, conn, m); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

func (db *DB) apply(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied) VALUES ($1, $2, $3)",
		m.version, m.name, db.now().UnixNano()); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.log.InfoContext(ctx, "applied schema migration", "version", m.version, "name", m.name)
	return nil
}

// sqlState returns the SQLSTATE of a server error in err, or "".
func sqlState(err error) string {
	if e, ok := errors.AsType[*pgconn.PgError](err); ok {
		return e.Code
	}
	return ""
}

// isExists: a primary key or UNIQUE constraint refused the row.
func isExists(err error) bool { return sqlState(err) == "23505" }

// isMissingRef: a foreign key refused the row (it names a user or
// session that is not there).
func isMissingRef(err error) bool { return sqlState(err) == "23503" }

// Times are BIGINT unix nanoseconds in UTC, as in the SQLite store; the
// zero time is NULL; outside 1677–2262 is refused, not clamped.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// encoder converts Go values to column values and keeps the first error.
type encoder struct{ err error }

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

func decodeTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// placeholders returns "$from, $from+1, …", n of them.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}

type rowScanner interface{ Scan(dest ...any) error }

// inTx runs f in a transaction and commits it if f succeeds.
func (db *DB) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
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

// cmpErr is err, or else fallback.
func cmpErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// rebind turns the ? placeholders of q into PostgreSQL's $1, $2, …, so the
// statements read as the SQLite store's do. No statement here has a ? in
// a literal.
func rebind(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// notText reports whether some s cannot be a TEXT value (PostgreSQL
// refuses a NUL and bytes that are not UTF-8, where SQLite keeps them).
// No row holds such a key, so a lookup by one is "not found", as on
// SQLite, not a statement the server refuses: that would be a store fault,
// a "try again" (503) for what a client sent.
func notText(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// asText makes s a TEXT value, for what is kept whatever it holds (the
// audit log): a NUL and bytes that are not UTF-8 become U+FFFD.
func asText(s string) string {
	if !notText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
