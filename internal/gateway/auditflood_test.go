package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestRefusedRegistrationsCannotFloodAudit: anyone who can reach the
// gateway can POST to a registration URL with no token. Each refusal is
// logged, but the audit (a store row each) takes at most
// refusalAuditRate of them a minute and then counts the rest: on main
// every request wrote a row, so one client on the network could grow the
// audit table without bound, unauthenticated.
func TestRefusedRegistrationsCannotFloodAudit(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = &fakeRemote{}
		c.RegisterURL = "https://127.0.0.1/"
	})
	hc := tg.client().http
	sid := "s-flood0000000"
	const n = 3 * refusalAuditRate
	for range n {
		req, _ := http.NewRequest("POST", tg.url+registration.Path(sid), strings.NewReader(`{"event":"ready"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer nope")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("registration without a token: %d", resp.StatusCode)
		}
	}
	evs, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: sid, Limit: 10 * n})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || len(evs) > refusalAuditRate {
		t.Fatalf("%d refused registrations wrote %d audit events, want 1 to %d", n, len(evs), refusalAuditRate)
	}
}

// TestEgressRegistrationsCannotFloodAudit: a batch runner's registration
// token is the job owner's to read (an adopted job's comes in the API's
// answer), so the owner can send egress registrations themselves, as
// fast as they like, each of registration.MaxEgress decisions. The
// runner caps what it reports; the gateway must too: past
// egressAuditPerMinute decisions a minute a session's are counted in one
// "suppressed" event. On main each decision was an audit row.
func TestEgressRegistrationsCannotFloodAudit(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = &fakeRemote{}
		c.RegisterURL = "https://127.0.0.1/"
	})
	sid := "s-0123456789ab"
	if err := tg.cfg.Store.CreateSession(context.Background(), &session.Session{ID: sid, Owner: "alice", Profile: "app",
		State: session.Ready, Backend: "fake-remote", BackendRef: "job-1"}); err != nil {
		t.Fatal(err)
	}
	batch := make([]registration.Egress, registration.MaxEgress)
	for i := range batch {
		batch[i] = registration.Egress{Target: fmt.Sprintf("h%d.example:443", i), Verdict: "refuse", Reason: "not in the list"}
	}
	body, _ := json.Marshal(registration.Registration{Event: "egress", Egress: batch})
	hc := tg.client().http
	const rounds = 6
	for range rounds {
		req, _ := http.NewRequest("POST", tg.url+registration.Path(sid), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tg.g.registerToken(sid))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("egress registration: %d", resp.StatusCode)
		}
	}
	evs, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{Session: sid, Limit: 10 * rounds * registration.MaxEgress})
	if err != nil {
		t.Fatal(err)
	}
	suppressed := 0
	for _, e := range evs {
		if strings.Contains(e.Detail, "suppressed") {
			suppressed++
		}
	}
	if len(evs) > egressAuditPerMinute+rounds || suppressed == 0 {
		t.Fatalf("%d decisions sent wrote %d audit events (%d saying what was suppressed), want at most %d and a count",
			rounds*registration.MaxEgress, len(evs), suppressed, egressAuditPerMinute+rounds)
	}
}
