package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// metrics are the gateway's counters, exposed in Prometheus text format.
type metrics struct {
	launches, failures  atomic.Int64
	bytesTo, bytesFrom  atomic.Int64
	connsOpen, viewers  atomic.Int64
	logins, loginsFaild atomic.Int64
}

// serveMetrics writes /metrics. The format is Prometheus's text exposition
// (version 0.0.4): a handful of counters and gauges need no client library.
func (g *Gateway) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	byState := map[session.State]int{}
	all, err := g.cfg.Store.ListSessions(r.Context(), store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}})
	if err != nil {
		return storeFault("list sessions", err)
	}
	for _, s := range all {
		byState[s.State]++
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# HELP airlock_sessions Sessions that have not ended, by state.\n# TYPE airlock_sessions gauge\n")
	for _, st := range []session.State{session.Queued, session.Starting, session.Ready, session.Stopping} {
		p("airlock_sessions{state=%q} %d\n", st, byState[st])
	}
	m := &g.metrics
	p("# HELP airlock_launches_total Sessions launched.\n# TYPE airlock_launches_total counter\nairlock_launches_total %d\n", m.launches.Load())
	p("# HELP airlock_launch_failures_total Launches refused or failed.\n# TYPE airlock_launch_failures_total counter\nairlock_launch_failures_total %d\n", m.failures.Load())
	p("# HELP airlock_proxied_bytes_total Bytes proxied to and from connectors.\n# TYPE airlock_proxied_bytes_total counter\n")
	p("airlock_proxied_bytes_total{direction=\"to_session\"} %d\nairlock_proxied_bytes_total{direction=\"from_session\"} %d\n", m.bytesTo.Load(), m.bytesFrom.Load())
	p("# HELP airlock_connector_connections Open connections to connectors.\n# TYPE airlock_connector_connections gauge\nairlock_connector_connections %d\n", m.connsOpen.Load())
	p("# HELP airlock_viewers Open viewer (WebSocket) connections.\n# TYPE airlock_viewers gauge\nairlock_viewers %d\n", m.viewers.Load())
	p("# HELP airlock_logins_total Logins by result.\n# TYPE airlock_logins_total counter\n")
	p("airlock_logins_total{result=\"ok\"} %d\nairlock_logins_total{result=\"failed\"} %d\n", m.logins.Load(), m.loginsFaild.Load())
	return nil
}

// audit records an event in the store and the audit log file.
func (g *Gateway) audit(ctx context.Context, actor, action, sessionID, remote, detail string) {
	e := session.AuditEvent{Time: g.now(), Actor: actor, Action: action, Session: sessionID, RemoteAddr: remote, Detail: detail}
	if err := g.cfg.Store.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		g.log.ErrorContext(ctx, "audit", "action", action, "session", sessionID, "error", err)
	}
	if g.cfg.AuditLog != nil {
		b, err := jsonLine(e)
		if err == nil {
			g.auditMu.Lock()
			_, err = g.cfg.AuditLog.Write(b)
			g.auditMu.Unlock()
		}
		if err != nil {
			// A full disk must not lose audit events without a word.
			g.log.ErrorContext(ctx, "write the audit log", "action", action, "session", sessionID, "error", err)
		}
	}
}
