package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// warnRemote is fakeRemote whose ready passes the runner's warnings on, as
// the Kubernetes backend's does.
type warnRemote struct{ fakeRemote }

func (w *warnRemote) Register(_ context.Context, _, _ string, _ net.IP, reg registration.Registration) (backend.Event, error) {
	return backend.Event{Kind: contract.EventReady, Endpoints: map[string]string{"app": "192.0.2.1:7400"},
		TLSSHA256: reg.TLSSHA256, Warnings: reg.Warnings}, nil
}

// TestRunnerWarningsAudited: a pod's runner that fell back to the pod's
// isolation says so in its ready registration, and the gateway records it
// in the session's audit (runner_warning), where an admin finds it.
func TestRunnerWarningsAudited(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = &warnRemote{}
		c.RegisterURL = "https://127.0.0.1/"
	})
	ctx := context.Background()
	sid := "s-0123456789ab"
	if err := tg.cfg.Store.CreateSession(ctx, &session.Session{ID: sid, Owner: "alice", Profile: "app", State: session.Starting,
		Backend: "fake-remote", BackendRef: "job-1"}); err != nil {
		t.Fatal(err)
	}
	warning := "user namespaces forbidden by the cluster (operation not permitted); isolation is the pod's network namespace and its NetworkPolicy"
	body, _ := json.Marshal(registration.Registration{Event: contract.EventReady, Ports: map[string]int{"app": 7400},
		TLSSHA256: "ab" + string(bytes.Repeat([]byte("ab"), 31)), Warnings: []string{warning}})
	req, _ := http.NewRequest("POST", tg.url+registration.Path(sid), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tg.g.registerToken(sid))
	resp, err := tg.client().http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("ready registration: %d %s", resp.StatusCode, b)
	}
	evs, err := tg.cfg.Store.ListAudit(ctx, store.AuditFilter{Session: sid, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Action == "runner_warning" && e.Detail == warning
	}
	if !found {
		t.Errorf("no runner_warning audit event with the warning; audit: %+v", evs)
	}
	if s, err := tg.cfg.Store.GetSession(ctx, sid); err != nil || s.State != session.Ready {
		t.Errorf("session %+v %v, want ready", s, err)
	}
}
