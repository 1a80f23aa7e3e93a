package postgres

import (
	"testing"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

func mustOpen(t testing.TB, dsn string) *DB {
	t.Helper()
	db, err := Open(t.Context(), Config{DSN: dsn})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestConformance runs the store suite against a real PostgreSQL server,
// each subtest in a database of its own.
func TestConformance(t *testing.T) {
	pg := realtest.StartPostgres(t)
	storetest.Run(t, func(t *testing.T) store.Store { return mustOpen(t, pg.NewDatabase(t)) })
}
