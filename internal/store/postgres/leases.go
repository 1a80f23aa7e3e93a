package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// TakeLease gives name to holder until now+ttl unless another holder has
// it unexpired, in one statement: the upsert's row lock makes two
// gateways racing for a free lease see one winner. Times come from the
// caller's clock; gateways on one database are expected to keep theirs
// in step (NTP), and the ttl should dwarf any skew.
func (db *DB) TakeLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, errors.New("take lease: no name, holder or ttl")
	}
	var e encoder
	at, until := e.time("now", now), e.time("expiry", now.Add(ttl))
	if e.err != nil || at == nil {
		return false, fmt.Errorf("take lease %s: %w", name, cmpErr(e.err, errors.New("zero time")))
	}
	var got string
	err := db.db.QueryRowContext(ctx, `INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
			WHERE leases.holder = excluded.holder OR leases.expires < $4
		RETURNING holder`, name, holder, until, at).Scan(&got)
	switch {
	case err == nil:
		return got == holder, nil
	case isNoRows(err):
		// The WHERE refused the update: someone else holds it.
		return false, nil
	}
	return false, fmt.Errorf("take lease %s: %w", name, err)
}

// ReleaseLease drops name if holder has it.
func (db *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := db.db.ExecContext(ctx, "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
