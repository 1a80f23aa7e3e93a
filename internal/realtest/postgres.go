package realtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a real PostgreSQL server a test started with Debian's
// initdb and pg_ctl (shared/libraries.md §6): a throw-away cluster in a
// temporary directory, reachable only through a UNIX socket there, as
// superuser "airlock" with trust authentication, fsync off. The socket
// directory is private (0700), so only the test's own user (and root)
// can connect.
type Postgres struct {
	// Dir holds the cluster (data/), its log and its socket.
	Dir  string
	Port int
	bin  string
	as   *syscall.Credential // the postgres account when the tests run as root: the server refuses root
	next atomic.Int64
}

// postgresBin returns the newest installed PostgreSQL's bin directory, or
// "".
func postgresBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// StartPostgres starts a PostgreSQL server for t, stopped when t ends. It
// skips t if PostgreSQL is not installed (scripts/install-deps.sh
// installs it), and fails it if PostgreSQL is there but does not start.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, skip, err := startPostgres()
	if skip != "" {
		t.Skip(skip)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.remove)
	return p
}

var shared struct {
	once sync.Once
	p    *Postgres
	skip string
	err  error
}

// SharedPostgres is StartPostgres for a whole test binary: one server,
// started by the first test that asks, so the second-long initdb is paid
// once; tests keep apart by [Postgres.NewDatabase]. The package's TestMain
// must be [PostgresMain], which stops it.
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	shared.once.Do(func() { shared.p, shared.skip, shared.err = startPostgres() })
	if shared.skip != "" {
		t.Skip(shared.skip)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.p
}

// PostgresMain runs the tests and then stops the server SharedPostgres
// started, if any. Use it as a package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(realtest.PostgresMain(m)) }
func PostgresMain(m *testing.M) int {
	code := m.Run()
	if shared.p != nil {
		shared.p.remove()
	}
	return code
}

func startPostgres() (_ *Postgres, skip string, _ error) {
	bin := postgresBin()
	if bin == "" {
		return nil, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl; scripts/install-deps.sh installs the postgresql package)", nil
	}
	dir, err := os.MkdirTemp("", "airlock-pg-")
	if err != nil {
		return nil, "", err
	}
	p := &Postgres{Dir: dir, Port: 5432, bin: bin}
	fail := func(err error) (*Postgres, string, error) {
		os.RemoveAll(dir)
		return nil, "", err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("running as root, PostgreSQL needs the postgres account (the postgresql package makes it): %w", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.as = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
	}
	if out, err := p.command("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "airlock",
		"--no-sync", "-E", "UTF8", "--locale=C").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	opts := fmt.Sprintf("-c listen_addresses='' -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
		p.Port, dir)
	if out, err := p.command("pg_ctl", "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "log"), "-w", "-t", "60",
		"-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return fail(fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log))
	}
	return p, "", nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.Dir = p.Dir
	if p.as != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.as}
	}
	return cmd
}

func (p *Postgres) stop() {
	// immediate: the cluster is thrown away, so nothing needs flushing.
	p.command("pg_ctl", "-D", filepath.Join(p.Dir, "data"), "-m", "immediate", "-w", "stop").Run()
}

func (p *Postgres) remove() {
	p.stop()
	os.RemoveAll(p.Dir)
}

// DSN is the connection string for database db.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=airlock dbname=%s sslmode=disable", p.Dir, p.Port, db)
}

// NewDatabase creates an empty database and returns its DSN. Each call
// makes another, so parallel tests each get their own.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t%d", p.next.Add(1))
	// template0: nothing a test did to template1 comes along.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return p.DSN(name)
}

// Stop stops the server at once, as a crash would, for tests of what a
// store fault looks like (not on a shared server).
func (p *Postgres) Stop() { p.stop() }
