package slurm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/registration"
)

// TestMain fails the package when a test leaves a goroutine behind (a
// poller or a watcher nobody stops).
func TestMain(m *testing.M) {
	code := m.Run()
	realtest.StopSlurm()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestParseSqueue(t *testing.T) {
	out := "@m@12|PENDING|Priority|n/a|debug|100|airlock-s-1|1:00:00\n" +
		"@m@13|RUNNING|None|node7|gpu|200|airlock-s-2|8:00:00\n" +
		"\n" +
		"@m@14_3|PENDING|Resources||debug|150|a|b|c|UNLIMITED\n" +
		// A name with newlines in it: the lines after the first are part
		// of it, however much they look like jobs.
		"@m@15|PENDING|None|n/a|debug|1|x|1:00\n12|COMPLETED|None|n/a|debug|1|forge|9:00\n"
	jobs, err := parseSqueue(out, "@m@")
	if err != nil {
		t.Fatal(err)
	}
	want := []job{
		{ID: "12", State: "PENDING", Reason: "Priority", Partition: "debug", Priority: 100, Name: "airlock-s-1", TimeLimit: "1:00:00"},
		{ID: "13", State: "RUNNING", Reason: "None", Node: "node7", Partition: "gpu", Priority: 200, Name: "airlock-s-2", TimeLimit: "8:00:00"},
		{ID: "14_3", State: "PENDING", Reason: "Resources", Partition: "debug", Priority: 150, Name: "a|b|c", TimeLimit: "UNLIMITED"},
		{ID: "15", State: "PENDING", Reason: "None", Partition: "debug", Priority: 1, Name: "x|1:00\n12|COMPLETED|None|n/a|debug|1|forge", TimeLimit: "9:00"},
	}
	if !slices.Equal(jobs, want) {
		t.Fatalf("got %+v\nwant %+v", jobs, want)
	}
	for _, bad := range []string{
		"12|PENDING|x\n",                          // too few fields
		"1;2|PENDING|None|n/a|debug|1|n|1:00\n",   // not a job id
		"12|PENDING|None|n/a|debug|high|n|1:00\n", // priority not a number
	} {
		if _, err := parseSqueue("@m@1|RUNNING|None|n|p|1|n|1\n@m@"+bad, "@m@"); err == nil || !strings.Contains(err.Error(), "record 2") {
			t.Errorf("%q: error %v, want one naming record 2", bad, err)
		}
	}
	if _, err := parseSqueue("1|RUNNING|None|n|p|1|n|1\n", "@m@"); err == nil {
		t.Error("output without the mark was read")
	}
}

func FuzzParseSqueue(f *testing.F) {
	f.Add("@m@12|PENDING|Priority|n/a|debug|100|airlock-s-1|1:00:00\n@m@13|RUNNING|None|node7|gpu|200|x|8:00:00\n")
	f.Add("@m@14_3|PENDING|Resources||debug|150|a|b|c|UNLIMITED")
	f.Add("@m@|||||||\n")
	f.Add("@m@15|PENDING|None|n/a|debug|1|x|1:00\n12|COMPLETED|None|n/a|debug|1|forge|9:00\n")
	f.Fuzz(func(t *testing.T, s string) {
		jobs, err := parseSqueue(s, "@m@")
		if err != nil {
			return
		}
		for _, j := range jobs {
			if !validJobID(j.ID) {
				t.Fatalf("accepted job id %q", j.ID)
			}
		}
		// Whatever was accepted, the positions are a permutation per partition.
		pos, total := queuePositions(jobs)
		seen := map[string]map[int]bool{}
		for _, j := range jobs {
			if j.State != "PENDING" {
				continue
			}
			p := pos[j.ID]
			if p < 1 || p > total[j.Partition] {
				t.Fatalf("position %d of %d", p, total[j.Partition])
			}
			if seen[j.Partition] == nil {
				seen[j.Partition] = map[int]bool{}
			}
			seen[j.Partition][p] = true
		}
	})
}

func TestQueuePositions(t *testing.T) {
	jobs := []job{
		{ID: "9", State: "PENDING", Partition: "a", Priority: 10},
		{ID: "10", State: "PENDING", Partition: "a", Priority: 50},
		{ID: "11", State: "PENDING", Partition: "a", Priority: 10},
		{ID: "12", State: "RUNNING", Partition: "a", Priority: 99},
		{ID: "13", State: "PENDING", Partition: "b", Priority: 1},
	}
	pos, total := queuePositions(jobs)
	want := map[string]int{"10": 1, "9": 2, "11": 3, "13": 1}
	for id, p := range want {
		if pos[id] != p {
			t.Errorf("job %s: position %d, want %d", id, pos[id], p)
		}
	}
	if total["a"] != 3 || total["b"] != 1 || pos["12"] != 0 {
		t.Errorf("totals %v, running job's position %d", total, pos["12"])
	}
}

func TestEndReason(t *testing.T) {
	for _, c := range []struct {
		j      job
		runner string
		want   string
	}{
		{job{ID: "5", State: "TIMEOUT", TimeLimit: "1:00"}, "stopped by SIGTERM", "the job reached its time limit of 1:00 (Slurm job 5: TIMEOUT)"},
		{job{ID: "5", State: "CANCELLED"}, "stopped by SIGTERM", "the job was cancelled in Slurm (Slurm job 5: CANCELLED)"},
		{job{ID: "5", State: "NODE_FAIL", Node: "n1"}, "", "node n1 failed (Slurm job 5: NODE_FAIL)"},
		{job{ID: "5", State: "PREEMPTED"}, "", "the job was preempted (Slurm job 5: PREEMPTED)"},
		{job{ID: "5", State: "FAILED"}, "workload exited with code 1", "workload exited with code 1 (Slurm job 5: FAILED)"},
		{job{ID: "5", State: "COMPLETED"}, "", "the job ended (Slurm job 5: COMPLETED)"},
	} {
		if got := endReason(c.j, c.runner); got != c.want {
			t.Errorf("%s: %q, want %q", c.j.State, got, c.want)
		}
	}
}

// TestParseSacct: how accounting says a forgotten job ended.
func TestParseSacct(t *testing.T) {
	j, ok := parseSacct("41|CANCELLED by 1001|node3|01:00:00\n", "41")
	if !ok || j.State != "CANCELLED" || j.Node != "node3" || endReason(j, "") != "the job was cancelled in Slurm (Slurm job 41: CANCELLED)" {
		t.Fatalf("%+v %v", j, ok)
	}
	for _, out := range []string{"", "42|TIMEOUT|n|1:00\n", "41|RUNNING|n|1:00\n", "41|TIMEOUT|n\n"} {
		if j, ok := parseSacct(out, "41"); ok {
			t.Errorf("%q: accepted %+v", out, j)
		}
	}
}

// TestSbatchArgs: the session's resources become the job's, the profile's
// options follow the backend's (sbatch takes the last), lifetimes round up
// to whole minutes.
func TestSbatchArgs(t *testing.T) {
	b, err := New(Config{Partition: "batch", Account: "lab", SbatchArgs: []string{"--constraint=x"}, JobPrefix: "gw1",
		Profiles: map[string]JobOptions{"gpu": {Partition: "gpu", SbatchArgs: []string{"--gres=gpu:1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	args := b.sbatchArgs(backend.Job{ID: "s-1", Profile: "gpu", CPUs: 4, MemoryMB: 8192, Lifetime: 90*time.Minute + time.Second}, "/home/u")
	want := []string{"--parsable", "--job-name=gw1-s-1", "--output=/dev/null", "--export=ALL", "--chdir=/home/u", "--nodes=1", "--ntasks=1",
		"--cpus-per-task=4", "--mem=8192M", "--time=91", "--partition=gpu", "--account=lab", "--constraint=x", "--gres=gpu:1"}
	if !slices.Equal(args, want) {
		t.Fatalf("got  %q\nwant %q", args, want)
	}
	if _, err := New(Config{NodeAddress: "node.example.org"}); err == nil {
		t.Fatal("node_address without {node} accepted")
	}
}

// TestScriptKeepsSecretsOut: the batch script (which Slurm stores and
// `scontrol write batch_script` prints) holds the spec but no secret; the
// secrets are in the job's environment only.
func TestScriptKeepsSecretsOut(t *testing.T) {
	b, _ := New(Config{Airlock: "/opt/air lock/airlock"})
	j := backend.Job{ID: "s-1", Profile: "desktop", Spec: []byte(`{"id":"s-1"}` + "\n"),
		Env: map[string]string{registration.EnvToken: "sekrit-token", registration.EnvTicketKey: "sekrit-key"}}
	script := string(b.script(j))
	if !strings.Contains(script, "exec '/opt/air lock/airlock' run --register") || !strings.Contains(script, "\n{\"id\":\"s-1\"}\nAIRLOCK_SPEC_END\n") {
		t.Fatalf("script:\n%s", script)
	}
	if strings.Contains(script, "sekrit") {
		t.Fatalf("a secret is in the script:\n%s", script)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	env := b.jobEnv(j, u)
	if !slices.Contains(env, registration.EnvToken+"=sekrit-token") {
		t.Fatalf("job env %q lacks the token", env)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "AIRLOCK_TEST_USER=") || strings.HasPrefix(kv, "GOFLAGS=") {
			t.Fatalf("the gateway's own environment leaked into the job: %s", kv)
		}
	}
}

// TestRealCluster: against the real one-node cluster, a job is submitted
// as the owner with the session's resources, reported queued with Slurm's
// reason and its position, refused registration while queued and from an
// address that is not the node's, and cancelled by Stop (reported as an
// exit); Runners lists it only while it lives.
func TestRealCluster(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	b, err := New(Config{Airlock: realtest.Binary(t), Poll: 200 * time.Millisecond, Env: cl.Env(), JobPrefix: "unit",
		Profiles: map[string]JobOptions{"later": {SbatchArgs: []string{"--begin=now+1hour"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := t.Context()
	ref, err := b.Start(ctx, backend.Job{ID: "s-unit1", Owner: owner.Name, Profile: "later", CPUs: 1, MemoryMB: 256, Lifetime: 10 * time.Minute,
		Spec: []byte(`{"id":"s-unit1"}`)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cl.Command("squeue", "--noheader", "--jobs="+strings.TrimPrefix(ref, "job:"), "--format=%u|%j|%C|%m|%l|%T")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), owner.Name+"|unit-s-unit1|1|256M|10:00|PENDING"; got != want {
		t.Fatalf("squeue %q, want %q", got, want)
	}
	ch, err := b.Watch(ctx, "s-unit1", ref)
	if err != nil {
		t.Fatal(err)
	}
	e := next(t, ch)
	if e.Kind != "queued" || !strings.Contains(e.Reason, "BeginTime") || !strings.Contains(e.Reason, "position") {
		t.Fatalf("first event %+v", e)
	}
	rs, err := b.Runners(ctx)
	if err != nil || rs["s-unit1"] != ref {
		t.Fatalf("runners %v %v", rs, err)
	}
	_, err = b.Register(ctx, "s-unit1", ref, net.ParseIP("127.0.0.1"), registration.Registration{Event: "ready", Ports: map[string]int{"c": 1}})
	if !errors.Is(err, backend.ErrRefused) || !strings.Contains(err.Error(), "not running on a node") {
		t.Fatalf("registration of a queued job: %v", err)
	}
	_, err = b.Register(ctx, "s-other", ref, net.ParseIP("127.0.0.1"), registration.Registration{Event: "ready"})
	if !errors.Is(err, backend.ErrRefused) || !strings.Contains(err.Error(), "not session s-other's") {
		t.Fatalf("registration naming another session's job: %v", err)
	}
	if err := b.Stop(ctx, "s-unit1", ref); err != nil {
		t.Fatal(err)
	}
	e = next(t, ch)
	if e.Kind != "exit" || !strings.Contains(e.Reason, "CANCELLED") {
		t.Fatalf("after stop: %+v", e)
	}
	if _, ok := <-ch; ok {
		t.Fatal("watch channel still open after exit")
	}
	rs, _ = b.Runners(ctx)
	if _, ok := rs["s-unit1"]; ok {
		t.Fatalf("cancelled job still listed: %v", rs)
	}
	if err := b.Stop(ctx, "s-unit1", ref); !errors.Is(err, backend.ErrGone) {
		t.Fatalf("stopping a cancelled job: %v, want ErrGone", err)
	}
	if _, err := b.Start(ctx, backend.Job{ID: "s-unit2", Owner: "root", Spec: []byte(`{}`)}); err == nil {
		t.Fatal("a job as root was submitted")
	}
	_, err = b.Start(ctx, backend.Job{ID: "s-unit3", Owner: owner.Name, Profile: "x", MemoryMB: 1 << 30, Spec: []byte(`{}`)})
	if err == nil || !strings.Contains(err.Error(), "sbatch") {
		t.Fatalf("a job larger than the cluster: %v, want sbatch's refusal", err)
	}
	t.Logf("sbatch refused: %v", err)
}

func next(t *testing.T, ch <-chan backend.Event) backend.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
	}
	return backend.Event{}
}

// BenchmarkEvents1000: one poll's work after squeue answered, with 1,000
// watched jobs in a queue of 2,000: parsing, queue positions, and each
// watcher's event.
func BenchmarkEvents1000(b *testing.B) {
	be, _ := New(Config{})
	var sb strings.Builder
	for i := range 2000 {
		state := "PENDING"
		if i%3 == 0 {
			state = "RUNNING"
		}
		fmt.Fprintf(&sb, "@m@%d|%s|Priority|n/a|debug|%d|airlock-s-%d|8:00:00\n", 1000+i, state, i%50, i)
	}
	out := sb.String()
	for i := range 1000 {
		be.watchers[fmt.Sprint(1000+2*i)] = &watcher{id: fmt.Sprint("s-", 2*i), ch: make(chan backend.Event, 1), ctx: context.Background()}
	}
	for b.Loop() {
		jobs, err := parseSqueue(out, "@m@")
		if err != nil {
			b.Fatal(err)
		}
		if ev := be.events(context.Background(), jobs); len(ev) != 1000 {
			b.Fatalf("%d events", len(ev))
		}
	}
}

// TestHungControllerBounded: a squeue that never answers (a controller
// that hangs) is killed after CommandTimeout and reported, so the poller
// goes on; Close ends the poller and the watches even while a command
// hangs. On main squeue ran with no deadline, blocking the poller (every
// session's state) forever, and the backend had no Close.
func TestHungControllerBounded(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"squeue", "sacct"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log syncBuffer
	b, err := New(Config{Bin: bin, Poll: 50 * time.Millisecond, CommandTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&log, t.Output()), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := b.Watch(t.Context(), "s-hung1", "job:1")
	if err != nil {
		t.Fatal(err)
	}
	err = realtest.WaitFor(10*time.Second, func() error {
		if !strings.Contains(log.String(), "squeue failed") || !strings.Contains(log.String(), "no answer before its deadline (at most 300ms)") {
			return errors.New("no squeue failure logged")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a hung squeue: %v; the log:\n%s", err, log.String())
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while squeue hung")
	}
	if _, ok := <-ch; ok {
		t.Fatal("a watch channel is open after Close")
	}
	if _, err := b.Watch(t.Context(), "s-hung2", "job:2"); err == nil {
		t.Fatal("Watch after Close: no error")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestParseAdoptLine: Adopt reads the owner, state and name of the job it
// asked about, the name whole even with "|" in it, and nothing from a
// line about another job or a short one.
func TestParseAdoptLine(t *testing.T) {
	owner, state, left, name, err := parseAdoptLine("7|RUNNING|alice|58:30|ood|x\n", "7")
	if err != nil || owner != "alice" || state != "RUNNING" || name != "ood|x" || left != 58*time.Minute+30*time.Second {
		t.Errorf("got %q %q %v %q %v", owner, state, left, name, err)
	}
	if _, _, left, _, err := parseAdoptLine("7|PENDING|alice|UNLIMITED|n\n", "7"); err != nil || left != 0 {
		t.Errorf("no limit: %v %v", left, err)
	}
	for _, bad := range []string{"", "8|RUNNING|alice|1:00|n\n", "7|RUNNING|alice|1:00\n", "7||alice|1:00|n\n", "7|RUNNING||1:00|n\n"} {
		if _, _, _, _, err := parseAdoptLine(bad, "7"); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestParseSlurmTime: the durations squeue prints, and what is none.
func TestParseSlurmTime(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1-02:03:04": 26*time.Hour + 3*time.Minute + 4*time.Second, "2-00": 48 * time.Hour, "1-01:30": 25*time.Hour + 30*time.Minute,
		"01:02:03": time.Hour + 2*time.Minute + 3*time.Second, "10:00": 10 * time.Minute, "45": 45 * time.Minute, "0:00": 0,
	} {
		if got, ok := parseSlurmTime(in); !ok || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "UNLIMITED", "NOT_SET", "INVALID", "1:2:3:4", "-1:00", "1--1", "+5", "1:-5", "9999999"} {
		if got, ok := parseSlurmTime(bad); ok {
			t.Errorf("%q: accepted as %v", bad, got)
		}
	}
}

func FuzzParseSlurmTime(f *testing.F) {
	for _, s := range []string{"1-02:03:04", "10:00", "45", "UNLIMITED", "2-00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := parseSlurmTime(s); ok && d < 0 {
			t.Fatalf("%q: %v", s, d)
		}
	})
}

func FuzzParseAdoptLine(f *testing.F) {
	f.Add("7|RUNNING|alice|59:00|ood-airlock-desktop\n", "7")
	f.Add("7|PENDING|bob|a|b|c", "7")
	f.Fuzz(func(t *testing.T, out, jid string) {
		owner, state, _, _, err := parseAdoptLine(out, jid)
		if err != nil {
			return
		}
		// Never an empty owner: "" means the gateway's own account.
		if owner == "" || state == "" || strings.Contains(owner, "|") || strings.Contains(state, "|") {
			t.Fatalf("owner %q state %q from %q", owner, state, out)
		}
	})
}

// TestJobNameCannotForgeQueue: another user of the cluster names their own
// job with a newline and a forged squeue line in it (Slurm takes any byte
// in a job name, and squeue prints it raw). The poll must neither fail on
// it (every session would stop being followed) nor believe the forged line
// (it claims the victim's job ended, which would end the victim's
// session): the victim's watcher still sees its job queued, and then the
// real cancellation.
func TestJobNameCannotForgeQueue(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	b, err := New(Config{Airlock: realtest.Binary(t), Poll: 100 * time.Millisecond, Env: cl.Env(), JobPrefix: "forge",
		Profiles: map[string]JobOptions{"later": {SbatchArgs: []string{"--begin=now+1hour"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := t.Context()
	ref, err := b.Start(ctx, backend.Job{ID: "s-victim", Owner: owner.Name, Profile: "later", CPUs: 1, MemoryMB: 64, Lifetime: 10 * time.Minute,
		Spec: []byte(`{"id":"s-victim"}`)})
	if err != nil {
		t.Fatal(err)
	}
	vjid := strings.TrimPrefix(ref, "job:")
	ch, err := b.Watch(ctx, "s-victim", ref)
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e.Kind != "queued" {
		t.Fatalf("first event %+v", e)
	}
	// The attacker's line is well formed up to the newline; what follows
	// is the victim's job, ended, and a job claiming another session.
	name := "x|1:00\n" + vjid + "|COMPLETED|None|n/a|debug|1|forge-s-victim|1:00\n" +
		"99999|RUNNING|None|evil|debug|1|forge-s-other"
	cmd := exec.Command("runuser", "-u", owner.Name, "--", "sbatch", "--parsable", "--begin=now+1hour", "--job-name="+name, "--output=/dev/null", "--wrap=true")
	cmd.Env = append(os.Environ(), cl.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("this Slurm refuses the forged name: %v %s", err, out)
	}
	ajid := strings.TrimSpace(string(out))
	t.Cleanup(func() { cl.Command("scancel", ajid) })
	got, _ := cl.Command("squeue", "--noheader", "--jobs="+ajid, "--format=%j")
	if !strings.Contains(got, "\n"+vjid+"|COMPLETED") {
		t.Skipf("squeue does not print the newline: %q", got)
	}
	// Several polls with the forged job in the queue: nothing but queued.
	rs, err := b.Runners(ctx)
	if err != nil {
		t.Fatalf("runners with a forged job name in the queue: %v", err)
	}
	if rs["s-victim"] != ref || rs["s-other"] != "" {
		t.Fatalf("runners believed the forged lines: %v", rs)
	}
	// A poll with the forged job in the queue: it reads, and the victim's
	// job is still what Slurm says it is.
	jobs, err := b.squeue(ctx)
	if err != nil {
		t.Fatalf("poll with a forged job name in the queue: %v", err)
	}
	for _, j := range jobs {
		if j.ID == "99999" || j.ID == vjid && j.State != "PENDING" {
			t.Fatalf("poll believed a forged line: %+v", j)
		}
	}
	if e, ok := b.events(ctx, jobs)[vjid]; ok && e.Kind == "exit" {
		t.Fatalf("the victim's session would end: %+v", e)
	}
	if err := b.Stop(ctx, "s-victim", ref); err != nil {
		t.Fatal(err)
	}
	// A queued event may come first: the attacker's job moved the
	// victim's position in the queue (seen under -race in CI).
	e := next(t, ch)
	for e.Kind == "queued" {
		e = next(t, ch)
	}
	if e.Kind != "exit" || !strings.Contains(e.Reason, "CANCELLED") {
		t.Fatalf("after stop: %+v", e)
	}
}

// TestAdoptOnceUnderRace: two adoptions of one job at once (a second
// `airlock attach`, or a POST from the portal racing the job's own) must
// give it to one session: the other is told it is taken. On main both
// read the job's name before either renamed it, and both got it.
func TestAdoptOnceUnderRace(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	b, err := New(Config{Airlock: realtest.Binary(t), Env: cl.Env(), JobPrefix: "race"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	for round := range 3 {
		cmd := exec.Command("runuser", "-u", owner.Name, "--", "sbatch", "--parsable", "--begin=now+1hour", "--job-name=ood", "--output=/dev/null", "--wrap=true")
		cmd.Env = append(os.Environ(), cl.Env()...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sbatch: %v %s", err, out)
		}
		jid := strings.TrimSpace(string(out))
		t.Cleanup(func() { cl.Command("scancel", jid) })
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = b.Adopt(t.Context(), fmt.Sprintf("s-race%d-%d", round, i), jid, owner.Name)
			})
		}
		wg.Wait()
		ok, taken := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, backend.ErrTaken):
				taken++
			default:
				t.Fatalf("adopt: %v", err)
			}
		}
		if ok != 1 || taken != 1 {
			t.Fatalf("round %d: %d adoptions of job %s succeeded, %d were told it is taken: %v", round, ok, jid, taken, errs)
		}
	}
}

// TestAdoptNoRootJob: a portal user whose name is "root" (run_as unset: a
// portal user runs as the account of their name) cannot adopt root's
// jobs, as no session is ever submitted as root. On main the owner check
// passed: root's job is root's.
func TestAdoptNoRootJob(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	b, err := New(Config{Airlock: realtest.Binary(t), Env: cl.Env(), JobPrefix: "rootjob"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	out, err := cl.Command("sbatch", "--parsable", "--begin=now+1hour", "--job-name=maint", "--output=/dev/null", "--wrap=true")
	if err != nil {
		t.Fatal(err)
	}
	jid := strings.TrimSpace(out)
	t.Cleanup(func() { cl.Command("scancel", jid) })
	if _, err := b.Adopt(t.Context(), "s-root", jid, "root"); !errors.Is(err, backend.ErrRefused) {
		t.Fatalf("adopting root's job as root: %v, want ErrRefused", err)
	}
	if name, _ := cl.Command("squeue", "--noheader", "--jobs="+jid, "--format=%j"); strings.TrimSpace(name) != "maint" {
		t.Fatalf("root's job renamed to %q", name)
	}
}

// TestUnadoptGivesTheNameBack: an adoption the gateway could not record
// gives the job its own name back (else, with the session's name and no
// session, a gateway would cancel it as an orphan of its own); a job
// renamed since is left alone, and the job can be adopted again.
func TestUnadoptGivesTheNameBack(t *testing.T) {
	cl := realtest.SlurmCluster(t)
	owner := realtest.TestUser(t)
	b, err := New(Config{Airlock: realtest.Binary(t), Env: cl.Env(), JobPrefix: "unadopt"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cmd := exec.Command("runuser", "-u", owner.Name, "--", "sbatch", "--parsable", "--begin=now+1hour", "--job-name=ood-airlock-desktop", "--output=/dev/null", "--wrap=true")
	cmd.Env = append(os.Environ(), cl.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v %s", err, out)
	}
	jid := strings.TrimSpace(string(out))
	t.Cleanup(func() { cl.Command("scancel", jid) })
	name := func() string {
		out, _ := cl.Command("squeue", "--noheader", "--jobs="+jid, "--format=%j")
		return strings.TrimSpace(out)
	}
	ad, err := b.Adopt(t.Context(), "s-unadopt1", jid, owner.Name)
	if err != nil || ad.Name != "ood-airlock-desktop" || name() != b.JobName("s-unadopt1") {
		t.Fatalf("adopt: %+v %v, job named %q", ad, err, name())
	}
	// Another session's Unadopt does not touch it.
	if err := b.Unadopt(t.Context(), "s-unadopt2", jid, "other"); err != nil || name() != b.JobName("s-unadopt1") {
		t.Fatalf("unadopt by another session: %v, job named %q", err, name())
	}
	if err := b.Unadopt(t.Context(), "s-unadopt1", jid, ad.Name); err != nil || name() != "ood-airlock-desktop" {
		t.Fatalf("unadopt: %v, job named %q", err, name())
	}
	if _, err := b.Adopt(t.Context(), "s-unadopt3", jid, owner.Name); err != nil {
		t.Fatalf("adopt again: %v", err)
	}
}
