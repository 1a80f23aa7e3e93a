package config

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// FuzzDSNHasPassword: no DSN the PostgreSQL driver reads a password from
// passes store.dsn's check (a password must come from password_file, never
// the config). The environment's PGPASSWORD and ~/.pgpass are switched off
// so the only password the driver can find is the DSN's own.
func FuzzDSNHasPassword(f *testing.F) {
	for _, s := range []string{
		"host=/run/postgresql dbname=airlock user=airlock",
		"postgres://airlock@db.example.org/airlock?sslmode=verify-full",
		"postgres://airlock:hunter2@db.example.org/airlock",
		"postgresql://db/airlock?password=hunter2",
		"host=db password=hunter2",
		"host=db PASSWORD = 'hunter 2'",
		"postgres://%61irlock:p%40ss@db/x",
		"postgres://db/x?options=-c%20password%3Dx",
		"postgres://db/x?pass%77ord=x",
		"postgres://u%3Ax@db/x",
		"postgres://db/x?pass%77ord=x&y=%zz",
		"postgres://db/x?y=%zz&pass%2577ord=x",
	} {
		f.Add(s)
	}
	f.Setenv("PGPASSWORD", "")
	f.Setenv("PGPASSFILE", "/nonexistent/pgpass")
	f.Setenv("PGSERVICEFILE", "/nonexistent/pg_service.conf")
	f.Setenv("PGSYSCONFDIR", "/nonexistent")
	f.Fuzz(func(t *testing.T, dsn string) {
		if dsnHasPassword(dsn) {
			return
		}
		c, err := pgconn.ParseConfig(dsn)
		if err == nil && c.Password != "" {
			t.Fatalf("DSN %q passes the check but carries the password %q", dsn, c.Password)
		}
	})
}
