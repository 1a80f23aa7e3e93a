package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend/slurm"
	"github.com/airlock-hpc/airlock/internal/mailer"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/realtest/smtpsink"
	"github.com/airlock-hpc/airlock/internal/session"
)

// TestSlurmReadyMail: a session held in the real Slurm queue, its owner
// asked to be e-mailed; nothing is sent while it waits, and once the job
// is released and the session ready, the mail with its link arrives at the
// SMTP sink.
func TestSlurmReadyMail(t *testing.T) {
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	realtest.TestUser(t)
	sink := smtpsink.Start(t)
	m, err := mailer.New(mailer.Config{URL: sink.URL, RootCAs: sink.CAFile, From: "airlock <airlock@gw.test>"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tg, _ := slurmGatewayWith(t, cl, dir, 0, func(c *Config) {
		be, err := slurm.New(slurm.Config{Airlock: realtest.Binary(t), Poll: 300 * time.Millisecond, Env: cl.Env(), JobPrefix: jobPrefix(dir),
			Profiles: map[string]slurm.JobOptions{"held": {SbatchArgs: []string{"--hold"}}}, Logger: c.Logger})
		if err != nil {
			t.Fatal(err)
		}
		c.Backend = be
		held := desktopProfile()
		held.Name = "held"
		c.Profiles = append(c.Profiles, held)
		c.Mailer = m
	}, "alice")
	c := tg.client().loginToken("alice")
	// A local user has no address until a login method gives one.
	if st, body := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "held", "notify_email": true}, nil); st != 400 || !strings.Contains(body, "no_mail") {
		t.Fatalf("notify without an address: %d %s; want 400 no_mail", st, body)
	}
	if err := tg.cfg.Store.PutUser(t.Context(), session.User{Name: "alice", Method: "local", Email: "alice@example.org"}); err != nil {
		t.Fatal(err)
	}
	s := c.start(map[string]any{"profile": "held", "notify_email": true})
	c.waitStateFor(s.ID, "queued", 10*time.Second)
	// The job, found by its name in the real queue: pending, held.
	name := tg.g.cfg.Backend.(*slurm.Backend).JobName(s.ID)
	var job string
	if err := realtest.WaitFor(20*time.Second, func() error {
		out, err := cl.Command("squeue", "--noheader", "--name="+name, "--format=%i|%T|%r")
		if err != nil {
			return err
		}
		f := strings.Split(strings.TrimSpace(out), "|")
		if len(f) != 3 || f[1] != "PENDING" || !strings.Contains(f[2], "Held") {
			return fmt.Errorf("job %s: %q", name, out)
		}
		job = f[0]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-sink.Got:
		t.Fatalf("mail while the job is held: %+v", msg)
	default:
	}
	if _, err := cl.Command("scontrol", "release", job); err != nil {
		t.Fatal(err)
	}
	c.waitStateFor(s.ID, "ready", 90*time.Second)
	msg := sink.Next(t, 30*time.Second)
	if len(msg.To) != 1 || msg.To[0] != "alice@example.org" || !strings.Contains(msg.Data, tg.url+"/sessions/"+s.ID) {
		t.Fatalf("ready mail: to %v:\n%s", msg.To, msg.Data)
	}
	c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	c.waitStateFor(s.ID, "ended", 30*time.Second)
}
