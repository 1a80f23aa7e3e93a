package gateway

import (
	"context"
	"strings"
	"testing"

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
