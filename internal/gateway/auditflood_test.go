package gateway

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/registration"
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
