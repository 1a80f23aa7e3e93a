package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
	"github.com/airlock-hpc/airlock/internal/store/sqlite"
)

// storeOptions is what the file's store keys say to open: a PostgreSQL
// database (pg set) or the SQLite file at path. The password file is read
// at open, not here (TestEveryConfigKeyIsUsed looks at this).
func storeOptions(cfg config.Config) (pg *postgres.Config, path string) {
	if cfg.Store.Driver == "postgres" {
		return &postgres.Config{DSN: cfg.Store.DSN}, ""
	}
	return nil, filepath.Join(cfg.StateDir, "airlock.db")
}

// openStore opens the configured store. create false refuses to make a
// SQLite file that is not there (a command other than serve, given a
// wrong --state-dir, must not make an empty store).
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, create bool) (store.Store, error) {
	pg, path := storeOptions(cfg)
	if pg != nil {
		pg.Logger = log
		if f := cfg.Store.PasswordFile; f != "" {
			pw, err := readSecret("store.password_file", f)
			if err != nil {
				return nil, err
			}
			pg.Password = pw
		}
		return postgres.Open(ctx, *pg)
	}
	if !create {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no store at %s: %w", path, err)
		}
	}
	return sqlite.Open(ctx, sqlite.Config{Path: path, Logger: log})
}
