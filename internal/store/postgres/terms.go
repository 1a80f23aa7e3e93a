package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/airlock-hpc/airlock/internal/store"
)

// AcceptTerms records that user accepted the terms of use of profile whose
// text hashes to hash, replacing an earlier acceptance.
func (db *DB) AcceptTerms(ctx context.Context, user, profile, hash string, at time.Time) error {
	if user == "" || profile == "" || hash == "" {
		return errors.New("accept terms: no user, profile or hash")
	}
	var e encoder
	t := e.time("accepted", at)
	if e.err != nil {
		return fmt.Errorf("accept terms: %w", e.err)
	}
	_, err := db.db.ExecContext(ctx, rebind(`INSERT INTO terms (username, profile, hash, accepted) VALUES (?, ?, ?, ?)
		ON CONFLICT (username, profile) DO UPDATE SET hash = excluded.hash, accepted = excluded.accepted`), user, profile, hash, t)
	if err != nil {
		return fmt.Errorf("accept terms %s/%s: %w", user, profile, err)
	}
	return nil
}

// TermsAccepted returns the hash of the terms of profile user accepted
// last, or an error wrapping [store.ErrNotFound].
func (db *DB) TermsAccepted(ctx context.Context, user, profile string) (string, error) {
	var h string
	err := db.db.QueryRowContext(ctx, rebind("SELECT hash FROM terms WHERE username = ? AND profile = ?"), user, profile).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("terms accepted %s/%s: %w", user, profile, err)
	}
	return h, nil
}
