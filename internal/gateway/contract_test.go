package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	backendlocal "github.com/airlock-hpc/airlock/internal/backend/local"
	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/runner"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestContract: for every profile kind and every backend, the spec the
// gateway builds is one the runner accepts, with connectors of registered
// kinds that the session page can offer; and the runner's events, as the
// runner writes them and as each backend carries them (the local
// backend's event file, the Slurm backend's registration), move the
// session to ready with the connectors' endpoints and then to ended.
//
// The Slurm backend's squeue is a script naming the job's node: what is
// under test is the contract between runner and gateway, not Slurm
// (TestSlurm* run a real cluster).
func TestContract(t *testing.T) {
	profiles := []Profile{
		{Name: "desktop", Title: "Desktop", Kind: "desktop", Xvnc: "Xvnc"},
		{Name: "desktop-pw", Title: "Desktop with a VNC password", Kind: "desktop", VNCPassword: true, Xvnc: "/usr/bin/Xvnc"},
		{Name: "app", Kind: "app", Command: []string{"app", "{port}", "{prefix}"}, Port: 8888},
		{Name: "app-socket", Kind: "app", Command: []string{"app", "{socket}"}, Socket: "/tmp/app.sock"},
		{Name: "vm", Kind: "vm", VM: &VMImage{Name: "img", Path: "/srv/img.qcow2", Format: "qcow2", OS: "linux", Firmware: "bios"}},
		{Name: "kiosk", Title: "Hub", Kind: "desktop", Xvnc: "Xvnc",
			Kiosk: &Kiosk{URL: "https://hub.example.org/hub/", Browser: "chromium", Allow: []string{"idp.example.org:443"}}},
	}
	for _, be := range []string{"local", "slurm"} {
		t.Run(be, func(t *testing.T) {
			stateDir := t.TempDir()
			cfg := testConfig(t, stateDir, time.Second, slog.LevelWarn)
			cfg.Profiles = profiles
			squeue := ""
			if be == "slurm" {
				squeue = fakeSqueue(t)
				sb, err := slurm.New(slurm.Config{Bin: squeue, NodeAddress: "{node}", JobPrefix: "airlock", Poll: 50 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sb.Close() })
				cfg.Backend, cfg.RegisterURL = sb, "https://gateway.example:8443"
			}
			g, err := New(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.Close() })
			for _, p := range profiles {
				t.Run(p.Name, func(t *testing.T) { contractCase(t, g, p, squeue) })
			}
		})
	}
}

func contractCase(t *testing.T, g *Gateway, p Profile, squeue string) {
	ctx := t.Context()
	s := &session.Session{ID: newID(), Owner: "alice", Profile: p.Name, State: session.Queued, Persistent: true,
		CPUs: 1, MemoryMB: 1024, Lifetime: time.Hour, Created: g.now(), Backend: g.cfg.Backend.Name(), BackendRef: "job:42"}
	if err := g.cfg.Store.CreateSessionWithin(ctx, s, store.Limits{}); err != nil {
		t.Fatal(err)
	}
	b, err := g.spec(s, p, LaunchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := runner.ParseSpec(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the runner refuses the gateway's spec: %v\n%s", err, b)
	}
	if len(spec.Connectors) == 0 {
		t.Fatalf("no connectors:\n%s", b)
	}
	// What the runner binds and reports: an address per connector.
	endpoints := map[string]string{}
	for i, c := range spec.Connectors {
		if _, ok := contract.Lookup(c.Kind); !ok {
			t.Errorf("connector %s: kind %q is not registered", c.Name, c.Kind)
		}
		v := connectorView(p, c.Name)
		if v == contract.ViewNone {
			t.Errorf("connector %s (%s): the session page cannot offer it", c.Name, c.Kind)
		}
		// An app is told the path the gateway serves its connector under:
		// "/" on the app's own host, its /s/ path on the gateway's origin.
		want := "/"
		if !g.appsOwnOrigin() {
			want = "/s/" + s.ID + "/" + c.Name + "/"
		}
		if v == contract.ViewApp && spec.Workload.Env["AIRLOCK_PREFIX"] != want {
			t.Errorf("connector %s: the app is told its prefix is %q, but the gateway serves it under %q", c.Name, spec.Workload.Env["AIRLOCK_PREFIX"], want)
		}
		if path, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
			endpoints[c.Name] = path
		} else {
			endpoints[c.Name] = fmt.Sprintf("0.0.0.0:%d", 40000+i)
		}
	}
	sha := strings.Repeat("ab", 32)
	ready := runner.Event{Kind: contract.EventReady, ID: s.ID, Endpoints: endpoints, TLSSHA256: sha, IDMap: "single"}
	exit := runner.Event{Kind: contract.EventExit, ID: s.ID, Reason: "stopped by SIGTERM"}

	var wantEndpoints map[string]string
	switch be := g.cfg.Backend.(type) {
	case *backendlocal.Backend:
		// The runner's stdout is the local backend's event file.
		host, _ := os.Hostname()
		e, ok := backendlocal.DecodeEvent(runner.EncodeEvent(ready), host)
		if !ok {
			t.Fatalf("the local backend cannot read the runner's ready line %s", runner.EncodeEvent(ready))
		}
		g.apply(ctx, s.ID, e)
		wantEndpoints = endpoints
		// A kiosk's egress proxy's refusal, as the runner prints it,
		// reaches the audit log with the session and the destination.
		eg := runner.Event{Kind: contract.EventEgress, ID: s.ID, Target: "evil.example:443", Verdict: "refuse", Reason: "destination not in the session's allow-list"}
		if e, ok = backendlocal.DecodeEvent(runner.EncodeEvent(eg), host); !ok {
			t.Fatalf("the local backend cannot read the runner's egress line %s", runner.EncodeEvent(eg))
		}
		g.apply(ctx, s.ID, e)
		audits, err := g.cfg.Store.ListAudit(ctx, store.AuditFilter{Session: s.ID})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(audits, func(a session.AuditEvent) bool {
			return a.Action == "egress" && a.Detail == "refuse evil.example:443: destination not in the session's allow-list"
		}) {
			t.Errorf("the egress refusal is not in the audit log: %+v", audits)
		}
	case backend.Remote:
		// A batch job's runner registers over HTTPS; the body goes through
		// the gateway's strict decoder.
		if err := os.WriteFile(filepath.Join(squeue, "name"), []byte(be.(*slurm.Backend).JobName(s.ID)), 0o600); err != nil {
			t.Fatal(err)
		}
		reg, err := runner.ReadyRegistration(endpoints, sha)
		if err != nil {
			t.Fatalf("the runner cannot register its endpoints: %v", err)
		}
		reg = throughJSON(t, reg)
		e, err := be.Register(ctx, s.ID, s.BackendRef, net.ParseIP("127.0.0.1"), reg)
		if err != nil {
			t.Fatalf("the backend refuses the runner's registration: %v", err)
		}
		g.apply(ctx, s.ID, e)
		wantEndpoints = map[string]string{}
		for name, addr := range endpoints {
			_, port, _ := net.SplitHostPort(addr)
			wantEndpoints[name] = net.JoinHostPort("localhost", port)
		}
	}
	got, err := g.cfg.Store.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != session.Ready || !maps.Equal(got.Endpoints, wantEndpoints) || got.TLSSHA256 != sha {
		t.Fatalf("after the runner's ready: %s, endpoints %v, sha %q; want ready, %v", got.State, got.Endpoints, got.TLSSHA256, wantEndpoints)
	}

	switch be := g.cfg.Backend.(type) {
	case *backendlocal.Backend:
		e, ok := backendlocal.DecodeEvent(runner.EncodeEvent(exit), "")
		if !ok {
			t.Fatal("the local backend cannot read the runner's exit line")
		}
		g.apply(ctx, s.ID, e)
	case backend.Remote:
		reg := throughJSON(t, registration.Registration{Event: contract.EventExit, Reason: exit.Reason})
		if _, err := be.Register(ctx, s.ID, s.BackendRef, net.ParseIP("127.0.0.1"), reg); err != nil {
			t.Fatalf("the backend refuses the runner's exit: %v", err)
		}
		// The job then ends, and the gateway's watch of it (what a launch
		// starts) brings the backend's exit, with the runner's reason.
		state := filepath.Join(squeue, "state")
		if err := os.WriteFile(state, []byte("COMPLETED"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(state) })
		g.watch(s.ID, s.BackendRef)
	}
	err = realtest.WaitFor(10*time.Second, func() error {
		if got, _ := g.cfg.Store.GetSession(ctx, s.ID); got.State != session.Ended || !strings.Contains(got.Reason, exit.Reason) {
			return fmt.Errorf("after the runner's exit: %s (%q), want ended with %q", got.State, got.Reason, exit.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// throughJSON sends a registration through JSON and the gateway's strict
// body decoder, as the HTTPS POST does.
func throughJSON(t *testing.T, reg registration.Registration) registration.Registration {
	t.Helper()
	b, err := json.Marshal(reg)
	if err != nil {
		t.Fatal(err)
	}
	var out registration.Registration
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return out
}

// fakeSqueue is a directory whose squeue says job 42 runs on localhost
// under the name of whatever session the gateway asks about, in the state
// the file "state" names (RUNNING when there is none).
func fakeSqueue(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
# Job 42 only; the name is the job prefix and the session the test set.
# Each record starts with the mark the backend put before its format.
d=$(dirname "$0")
mark=
for a in "$@"; do case "$a" in --format=*) f=${a#--format=}; mark=${f%%%i*} ;; esac; done
echo "${mark}42|$(cat "$d/state" 2>/dev/null || echo RUNNING)|None|localhost|debug|1|$(cat "$d/name")|1:00:00"
`
	if err := os.WriteFile(filepath.Join(dir, "squeue"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
