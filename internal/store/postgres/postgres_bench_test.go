package postgres

import (
	"testing"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

// BenchmarkStore is storetest.Bench on a real PostgreSQL server on this
// machine (a UNIX socket, fsync off as in every test cluster here), with
// the SQLite store's sizes: 10,000 sessions of 1,000 users. Compare with
// internal/store/sqlite's BenchmarkStore.
func BenchmarkStore(b *testing.B) {
	pg := realtest.SharedPostgres(b)
	storetest.Bench(b, mustOpen(b, pg.NewDatabase(b)), 10_000, 1_000)
}
