package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// channel is the NOTIFY channel the gateways talk on.
const channel = "airlock_events"

// maxPayload is under PostgreSQL's 8,000-byte NOTIFY limit.
const maxPayload = 7000

// Broadcast sends payload to every gateway listening on the database
// (pg_notify: delivered once the sending transaction, here the statement,
// commits).
func (db *DB) Broadcast(ctx context.Context, payload []byte) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("broadcast: %d bytes, at most %d", len(payload), maxPayload)
	}
	if _, err := db.db.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, string(payload)); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	return nil
}

// Listen delivers broadcasts on a connection of its own (LISTEN holds a
// connection; the pool's are for statements), remade a second after it
// breaks. A nil payload first, and after each reconnection, says messages
// may have been missed.
func (db *DB) Listen(ctx context.Context) <-chan []byte {
	out := make(chan []byte, 64)
	go func() {
		defer close(out)
		failing := false
		for ctx.Err() == nil {
			err := db.listenOnce(ctx, out)
			if ctx.Err() != nil {
				return
			}
			if !failing {
				db.log.WarnContext(ctx, "listen for other gateways' events: connection lost; reconnecting", "error", err)
			}
			failing = true
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func (db *DB) listenOnce(ctx context.Context, out chan<- []byte) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := pgx.ConnectConfig(cctx, &db.conn)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(c)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	select {
	case out <- nil:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		select {
		case out <- []byte(n.Payload):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
