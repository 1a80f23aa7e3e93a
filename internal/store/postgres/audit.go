package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// AppendAudit adds e to the audit log. A zero e.Time is stored as the
// DB's clock. There is no way to change or remove an event through the
// store, and the schema's triggers refuse it from outside.
func (db *DB) AppendAudit(ctx context.Context, e session.AuditEvent) error {
	if e.Time.IsZero() {
		e.Time = db.now()
	}
	var enc encoder
	t := enc.time("time", e.Time)
	err := enc.err
	if err == nil {
		_, err = db.db.ExecContext(ctx,
			rebind("INSERT INTO audit (time, actor, action, session_id, remote_addr, detail) VALUES (?, ?, ?, ?, ?, ?)"),
			t, asText(e.Actor), asText(e.Action), asText(e.Session), asText(e.RemoteAddr), asText(e.Detail))
	}
	if err != nil {
		return fmt.Errorf("append audit %s by %s: %w", e.Action, e.Actor, err)
	}
	return nil
}

// ListAudit returns the events matching f, newest first; events with the
// same Time come newest-appended first. Since is inclusive. A Limit of 0
// or less means no limit.
func (db *DB) ListAudit(ctx context.Context, f store.AuditFilter) ([]session.AuditEvent, error) {
	var (
		q     strings.Builder
		args  []any
		where = " WHERE "
	)
	q.WriteString("SELECT time, actor, action, session_id, remote_addr, detail FROM audit")
	if f.Actor != "" {
		q.WriteString(where + "actor = ?")
		args, where = append(args, asText(f.Actor)), " AND "
	}
	if f.Session != "" {
		q.WriteString(where + "session_id = ?")
		args, where = append(args, asText(f.Session)), " AND "
	}
	// No stored time is before minTime, so an earlier Since filters
	// nothing; a later-than-storable one is clamped and matches nothing.
	if !f.Since.IsZero() && f.Since.After(minTime) {
		q.WriteString(where + "time >= ?")
		since := f.Since
		if since.After(maxTime) {
			since = maxTime
		}
		args = append(args, since.UnixNano())
	}
	q.WriteString(" ORDER BY time DESC, id DESC")
	if f.Limit > 0 {
		q.WriteString(" LIMIT ?")
		args = append(args, f.Limit)
	}
	rows, err := db.db.QueryContext(ctx, rebind(q.String()), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []session.AuditEvent
	for rows.Next() {
		var (
			e session.AuditEvent
			t int64
		)
		if err := rows.Scan(&t, &e.Actor, &e.Action, &e.Session, &e.RemoteAddr, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = fromNanos(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
