package gateway

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestAdoptNeedsSlurm: a gateway whose sessions are not Slurm jobs refuses
// to adopt one (400, naming why) and stores no session for the attempt;
// a job id that is not digits never reaches a command. The Slurm side
// (owner, state, a second adoption, the runner through the gateway) is
// internal/oodapp's TestOODAppSlurmGateway, on the real cluster.
func TestAdoptNeedsSlurm(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	for _, job := range []string{"12", "1;id"} {
		code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": job}, nil)
		if code != 400 || !strings.Contains(body, "not_slurm") {
			t.Errorf("slurm_job %q on a local gateway: %d %s, want 400 not_slurm", job, code, body)
		}
	}
	if ss, err := tg.g.cfg.Store.ListSessions(context.Background(), store.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Errorf("sessions after refused adoptions: %v %v", ss, err)
	}
}

// TestAdoptRefusedSharedAccount: a Slurm gateway whose users all run as
// one Unix account (run_as without {user}, as the test harness sets it)
// cannot tell whose job is whose: it adopts none, before asking Slurm.
func TestAdoptRefusedSharedAccount(t *testing.T) {
	_, tg, c := slurmTest(t)
	code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": "1"}, nil)
	if code != 400 || !strings.Contains(body, "shared_account") {
		t.Errorf("adoption on a shared-account gateway: %d %s, want 400 shared_account", code, body)
	}
	if ss, err := tg.g.cfg.Store.ListSessions(context.Background(), store.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Errorf("sessions after a refused adoption: %v %v", ss, err)
	}
}

// fakeAdopter is a remote backend that adopts any job: what the gateway
// does before and after asking the scheduler.
type fakeAdopter struct {
	fakeRemote
	adopted atomic.Int64
}

func (f *fakeAdopter) Adopt(_ context.Context, _, jid, _ string) (backend.Adoption, error) {
	f.adopted.Add(1)
	return backend.Adoption{Ref: "job:" + jid}, nil
}

func (f *fakeAdopter) Unadopt(context.Context, string, string, string) error { return nil }

// TestAdoptRefusesControlsAgainstTheUser: an adopted job's runner is run
// by the user (`airlock attach` gets the spec in the answer and runs it),
// so whatever the runner enforces is theirs to edit: a kiosk's site and
// allow-list, a clipboard direction; and the ticket key in the answer
// reaches the connector past the gateway's recording. A profile with such
// controls is not
// adopted (400, before the scheduler is asked); a plain desktop is. On
// main the kiosk, clipboard-less and recorded profiles were adopted and their
// specs handed to the user.
func TestAdoptRefusesControlsAgainstTheUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("adoption needs a gateway with an account per user (root)")
	}
	fake := &fakeAdopter{}
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = fake
		c.RegisterURL = "https://127.0.0.1/"
		c.RunAs = "{user}"
		kiosk := desktopProfile()
		kiosk.Name, kiosk.Programs, kiosk.Kiosk = "kiosk", nil, &Kiosk{URL: "https://hub.example.org/"}
		noclip := desktopProfile()
		noclip.Name, noclip.Clipboard = "noclip", contract.ClipboardNone
		rec := desktopProfile()
		rec.Name, rec.Record = "rec", true
		c.Profiles = append(c.Profiles, kiosk, noclip, rec)
	}, "alice")
	c := tg.client().loginToken("alice")
	for _, p := range []string{"kiosk", "noclip", "rec"} {
		code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": p, "slurm_job": "12"}, nil)
		if code != 400 || !strings.Contains(body, "not_adoptable") {
			t.Errorf("adopting a job as %s: %d %s, want 400 not_adoptable", p, code, body)
		}
	}
	if n := fake.adopted.Load(); n != 0 {
		t.Errorf("the scheduler was asked %d times", n)
	}
	if code, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "slurm_job": "13"}, nil); code != 201 || !strings.Contains(body, `"runner"`) {
		t.Errorf("adopting a job as a plain desktop: %d %s", code, body)
	}
}
