// Package slurm runs each session as a Slurm batch job. The gateway submits
// the job with sbatch as the session's owner (through runuser when the
// gateway is root); the job runs `airlock run --register`, which seals the
// session on the compute node and registers its connectors' ports with the
// gateway over HTTPS. One poller asks squeue about every job at once and
// turns what it sees into the sessions' events: queued (with Slurm's reason
// and the queue position), starting, and exit with the scheduler's reason.
package slurm

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
)

// Config configures the Slurm backend.
type Config struct {
	// Airlock is the airlock binary on the compute nodes. Default "airlock".
	Airlock string
	// Partition, Account and QOS are sbatch's --partition, --account and
	// --qos; empty leaves them to Slurm.
	Partition, Account, QOS string
	// SbatchArgs are more sbatch options, one per item.
	SbatchArgs []string
	// Profiles override the options above for one profile, by name.
	Profiles map[string]JobOptions
	// NodeAddress is how the gateway reaches a node, with {node} replaced
	// by the node's Slurm name ("{node}.ib.example.org"). Default "{node}".
	NodeAddress string
	// Output is sbatch --output for the job's log (the runner's and the
	// seal's messages), with sbatch's % patterns. Default "/dev/null".
	Output string
	// JobPrefix starts every job's name ("PREFIX-SESSIONID"). Gateways
	// that share a cluster need different ones: each cancels the jobs with
	// its prefix that it has no session for. Default "airlock".
	JobPrefix string
	// Poll is how often squeue is asked. Default 5s.
	Poll time.Duration
	// Env is added to the environment of sbatch, squeue and scancel
	// (SLURM_CONF=...).
	Env []string
	// Bin is the directory of Slurm's commands. Default: looked up in PATH.
	Bin string
	// CommandTimeout bounds each run of a Slurm command: a controller that
	// does not answer must not hang the poller (every session's state) or
	// a launch. Default 30s.
	CommandTimeout time.Duration
	Logger         *slog.Logger
}

// JobOptions are a profile's own job options.
type JobOptions struct {
	Partition, Account, QOS string
	// SbatchArgs are added after the backend's.
	SbatchArgs []string
}

// Backend is the Slurm backend.
type Backend struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// watchers are the Watch calls by job id.
	watchers map[string]*watcher
	// runnerExit is what runners reported when they ended, by session id,
	// until the poller sees the job end.
	runnerExit map[string]string
	// wake starts a poll now (a new watcher wants its first state).
	wake    chan struct{}
	polling bool
	// adoptMu makes Adopt's read of a job's name and its rename one step:
	// two adoptions of one job at once both read it unclaimed otherwise.
	adoptMu sync.Mutex
	closed  bool
	// ctx ends with Close; wg counts the poller and the watchers' helpers.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type watcher struct {
	id   string
	ch   chan backend.Event
	ctx  context.Context
	last string // the last event's kind and reason: events are sent on change
}

var _ backend.Remote = (*Backend)(nil)

// New checks cfg and returns a backend. It does not talk to Slurm yet.
func New(cfg Config) (*Backend, error) {
	cfg.Airlock = cmp.Or(cfg.Airlock, "airlock")
	cfg.NodeAddress = cmp.Or(cfg.NodeAddress, "{node}")
	cfg.Output = cmp.Or(cfg.Output, "/dev/null")
	cfg.Poll = cmp.Or(cfg.Poll, 5*time.Second)
	cfg.JobPrefix = cmp.Or(cfg.JobPrefix, "airlock")
	cfg.CommandTimeout = cmp.Or(cfg.CommandTimeout, 30*time.Second)
	if !strings.Contains(cfg.NodeAddress, "{node}") {
		return nil, fmt.Errorf("slurm backend: node_address %q must contain {node}", cfg.NodeAddress)
	}
	b := &Backend{
		cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "backend", "backend", "slurm"),
		watchers: map[string]*watcher{}, runnerExit: map[string]string{}, wake: make(chan struct{}, 1),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Close stops the poller, ends every Watch (their channels close) and
// waits for the backend's goroutines, a Slurm command under way included
// (it is killed). Jobs keep running. It is safe to call twice.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for jid, w := range b.watchers {
		close(w.ch)
		delete(b.watchers, jid)
	}
	return nil
}

// Name is "slurm".
func (b *Backend) Name() string { return "slurm" }

// JobName is the name of session id's job: the prefix, "-", the id.
// Runners knows this gateway's jobs by it.
func (b *Backend) JobName(id string) string { return b.cfg.JobPrefix + "-" + id }

// command runs one of Slurm's commands, as account when it is not empty
// and not us, and returns its standard output; an error carries what the
// command printed on standard error.
func (b *Backend) command(ctx context.Context, account, name string, stdin []byte, env []string, args ...string) (string, error) {
	path := name
	if b.cfg.Bin != "" {
		path = b.cfg.Bin + "/" + name
	}
	argv := append([]string{path}, args...)
	if account != "" {
		if cur, err := user.Current(); err != nil || cur.Username != account {
			if os.Geteuid() != 0 {
				return "", fmt.Errorf("%s as %s: the gateway must run as root to submit jobs as their owners", name, account)
			}
			// runuser: no password, no PAM session of the user's shell;
			// exactly the environment we give it.
			argv = append([]string{"runuser", "-u", account, "--"}, argv...)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A child the command left holding its output open must not keep
	// Run waiting after the command itself was killed.
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = append(os.Environ(), b.cfg.Env...)
	}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			msg = fmt.Sprintf("no answer before its deadline (at most %s); killed", b.cfg.CommandTimeout)
		case ctx.Err() != nil:
			msg = "cancelled: " + ctx.Err().Error()
		case msg == "":
			msg = err.Error()
		}
		return stdout.String(), &CommandError{Command: name, Message: msg}
	}
	return stdout.String(), nil
}

// CommandError is a Slurm command that failed, with what it said.
type CommandError struct {
	Command string
	Message string
}

func (e *CommandError) Error() string {
	if strings.HasPrefix(e.Message, e.Command+":") {
		return e.Message // Slurm's commands name themselves
	}
	return e.Command + ": " + e.Message
}

// Start submits the session's job as job.Owner and returns "job:ID".
func (b *Backend) Start(ctx context.Context, j backend.Job) (string, error) {
	if j.Owner == "" {
		cur, err := user.Current()
		if err != nil {
			return "", fmt.Errorf("start %s: %w", j.ID, err)
		}
		j.Owner = cur.Username
	}
	u, err := user.Lookup(j.Owner)
	if err != nil {
		return "", fmt.Errorf("start %s: account %s: %w", j.ID, j.Owner, err)
	}
	if u.Uid == "0" {
		return "", fmt.Errorf("start %s: sessions do not run as root; set run_as or log in as a user", j.ID)
	}
	args := b.sbatchArgs(j, u.HomeDir)
	script := b.script(j)
	env := b.jobEnv(j, u)
	out, err := b.command(ctx, j.Owner, "sbatch", script, env, args...)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", j.ID, err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";") // --parsable: "ID" or "ID;cluster"
	if !validJobID(id) {
		return "", fmt.Errorf("start %s: sbatch printed %q, not a job id", j.ID, out)
	}
	b.log.InfoContext(ctx, "job submitted", "session", j.ID, "job", id, "owner", j.Owner)
	b.poke()
	return "job:" + id, nil
}

// sbatchArgs are the job's options: the session's resources, then the
// backend's and the profile's options (later ones win in sbatch).
func (b *Backend) sbatchArgs(j backend.Job, home string) []string {
	args := []string{"--parsable", "--job-name=" + b.JobName(j.ID), "--output=" + b.cfg.Output,
		"--export=ALL", "--chdir=" + cmp.Or(home, "/"), "--nodes=1", "--ntasks=1"}
	if j.CPUs > 0 {
		args = append(args, "--cpus-per-task="+strconv.Itoa(j.CPUs))
	}
	if j.MemoryMB > 0 {
		args = append(args, "--mem="+strconv.Itoa(j.MemoryMB)+"M")
	}
	if j.Lifetime > 0 {
		// Slurm counts whole minutes; round up, never down.
		args = append(args, "--time="+strconv.Itoa(int((j.Lifetime+time.Minute-1)/time.Minute)))
	}
	p := b.cfg.Profiles[j.Profile]
	if v := cmp.Or(p.Partition, b.cfg.Partition); v != "" {
		args = append(args, "--partition="+v)
	}
	if v := cmp.Or(p.Account, b.cfg.Account); v != "" {
		args = append(args, "--account="+v)
	}
	if v := cmp.Or(p.QOS, b.cfg.QOS); v != "" {
		args = append(args, "--qos="+v)
	}
	args = append(args, b.cfg.SbatchArgs...)
	return append(args, p.SbatchArgs...)
}

// specEnd ends the spec in the job script; JSON from encoding/json has no
// line of its own, so it cannot end the here-document early.
const specEnd = "AIRLOCK_SPEC_END"

// script is the batch script: the spec travels in it (it holds no secret),
// the secrets in the job's environment.
func (b *Backend) script(j backend.Job) []byte {
	var s bytes.Buffer
	fmt.Fprintf(&s, "#!/bin/sh\n# airlock session %s (profile %s)\n", j.ID, j.Profile)
	fmt.Fprintf(&s, "exec %s run --register --log-format json --spec - <<'%s'\n", shellQuote(b.cfg.Airlock), specEnd)
	s.Write(bytes.TrimSpace(j.Spec))
	fmt.Fprintf(&s, "\n%s\n", specEnd)
	return s.Bytes()
}

// jobEnv is sbatch's environment, which --export=ALL hands to the job: a
// small, fixed base (nothing of the gateway's own), Slurm's settings and
// the session's secrets.
func (b *Backend) jobEnv(j backend.Job, u *user.User) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", "HOME=" + u.HomeDir,
		"USER=" + u.Username, "LOGNAME=" + u.Username, "LANG=C.UTF-8"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SLURM_CONF=") {
			env = append(env, kv)
		}
	}
	env = append(env, b.cfg.Env...)
	for k, v := range j.Env {
		env = append(env, k+"="+v)
	}
	return env
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func jobID(ref string) (string, error) {
	id, ok := strings.CutPrefix(ref, "job:")
	if !ok || !validJobID(id) {
		return "", fmt.Errorf("backend ref %q: want job:ID", ref)
	}
	return id, nil
}

// Stop cancels the job: Slurm signals the runner, which tears the session
// down; the poller reports the end.
func (b *Backend) Stop(ctx context.Context, id, ref string) error {
	jid, err := jobID(ref)
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	// scancel says nothing about a job that has already ended; ask first,
	// so a stop of an ended session is told so.
	mark := newMark()
	out, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--states=all", "--jobs="+jid, "--format="+mark+squeueFormat)
	if err != nil && strings.Contains(err.Error(), "Invalid job id") {
		return fmt.Errorf("stop %s: %w", id, backend.ErrGone)
	}
	if jobs, perr := parseSqueue(out, mark); err == nil && perr == nil && len(jobs) == 1 && finished(jobs[0].State) && jobs[0].State != "COMPLETING" {
		return fmt.Errorf("stop %s: job %s is %s: %w", id, jid, jobs[0].State, backend.ErrGone)
	}
	if _, err := b.command(ctx, "", "scancel", nil, nil, jid); err != nil {
		if strings.Contains(err.Error(), "Invalid job id") || strings.Contains(err.Error(), "already completing or completed") {
			return fmt.Errorf("stop %s: %w", id, backend.ErrGone)
		}
		return fmt.Errorf("stop %s: %w", id, err)
	}
	b.poke()
	return nil
}

// Watch reports the job's state as the poller sees it change, until the
// job has ended.
func (b *Backend) Watch(ctx context.Context, id, ref string) (<-chan backend.Event, error) {
	jid, err := jobID(ref)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", id, err)
	}
	w := &watcher{id: id, ch: make(chan backend.Event, 4), ctx: ctx}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("watch %s: the slurm backend is closed", id)
	}
	if old, ok := b.watchers[jid]; ok && old.ctx.Err() == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("watch %s: job %s is already watched", id, jid)
	}
	b.watchers[jid] = w
	start := !b.polling
	b.polling = true
	// Added under the lock that checked closed: Close's Wait cannot miss
	// them.
	if start {
		b.wg.Add(1)
	}
	b.wg.Add(1)
	b.mu.Unlock()
	if start {
		go b.pollLoop()
	}
	go func() {
		defer b.wg.Done()
		// Close promptly when the watcher goes (a gateway shutting down
		// waits for its watchers), not at the next poll. Close closes
		// the channels itself.
		select {
		case <-ctx.Done():
		case <-b.ctx.Done():
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.watchers[jid] == w {
			close(w.ch)
			delete(b.watchers, jid)
		}
	}()
	b.poke()
	return w.ch, nil
}

func (b *Backend) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pollLoop polls while anyone watches, until Close.
func (b *Backend) pollLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.wake:
		case <-b.ctx.Done():
			return
		}
		if !b.pollOnce(b.ctx) {
			return
		}
	}
}

// pollOnce asks squeue about every job and tells each watcher what changed.
// It returns false (and the loop ends) when nobody watches any more.
func (b *Backend) pollOnce(ctx context.Context) bool {
	b.mu.Lock()
	if len(b.watchers) == 0 {
		b.polling = false
		b.mu.Unlock()
		return false
	}
	b.mu.Unlock()

	jobs, err := b.squeue(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false // closed
		}
		// Slurm's controller may be restarting: say so, end nothing.
		b.log.WarnContext(ctx, "squeue failed; sessions keep their state", "error", err)
		return true
	}
	events := b.events(ctx, jobs)
	b.mu.Lock()
	defer b.mu.Unlock()
	for jid, e := range events {
		w := b.watchers[jid]
		if w == nil || w.ctx.Err() != nil {
			continue
		}
		select {
		case w.ch <- e:
		case <-w.ctx.Done():
		default:
			// A watcher that does not keep up gets the change next poll.
			continue
		}
		w.last = string(e.Kind) + "\x00" + e.Reason
		if e.Kind == contract.EventExit {
			close(w.ch)
			delete(b.watchers, jid)
			delete(b.runnerExit, w.id)
		}
	}
	return true
}

// squeue lists every job Slurm's controller still knows, all users' (the
// queue positions need them).
func (b *Backend) squeue(ctx context.Context) ([]job, error) {
	mark := newMark()
	out, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--all", "--states=all", "--format="+mark+squeueFormat)
	if err != nil {
		return nil, err
	}
	return parseSqueue(out, mark)
}

// events turns the queue into the event each watcher should get now (only
// where it differs from the last one sent).
func (b *Backend) events(ctx context.Context, jobs []job) map[string]backend.Event {
	pos, total := queuePositions(jobs)
	byID := make(map[string]job, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	b.mu.Lock()
	type want struct {
		jid string
		w   *watcher
	}
	var ws []want
	for jid, w := range b.watchers {
		ws = append(ws, want{jid, w})
	}
	b.mu.Unlock()
	out := map[string]backend.Event{}
	for _, x := range ws {
		j, ok := byID[x.jid]
		var e backend.Event
		switch {
		case !ok:
			// Not in the controller's memory: long finished (MinJobAge) or
			// never known. Ask once more by id before calling it gone.
			if b.jobExists(ctx, x.jid) {
				continue
			}
			b.mu.Lock()
			r := b.runnerExit[x.w.id]
			b.mu.Unlock()
			if j, ok := b.sacct(ctx, x.jid); ok {
				e = backend.Event{Kind: contract.EventExit, Reason: endReason(j, r), Node: j.Node}
				break
			}
			e = backend.Event{Kind: contract.EventExit, Reason: cmp.Or(r, "Slurm no longer knows job "+x.jid), Code: -1}
		case j.State == "PENDING":
			reason := "waiting in the queue"
			if j.Reason != "" && j.Reason != "None" {
				reason += ": " + j.Reason
			}
			if p := pos[j.ID]; p > 0 {
				reason += fmt.Sprintf(" (position %d of %d in %s)", p, total[j.Partition], j.Partition)
			}
			e = backend.Event{Kind: contract.EventQueued, Reason: reason}
		case !finished(j.State):
			e = backend.Event{Kind: contract.EventStarting, Node: j.Node}
		default:
			b.mu.Lock()
			r := b.runnerExit[x.w.id]
			b.mu.Unlock()
			e = backend.Event{Kind: contract.EventExit, Reason: endReason(j, r), Node: j.Node}
		}
		if x.w.last != string(e.Kind)+"\x00"+e.Reason {
			out[x.jid] = e
		}
	}
	return out
}

// jobExists asks the controller about one job by id.
func (b *Backend) jobExists(ctx context.Context, jid string) bool {
	_, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--states=all", "--jobs="+jid, "--format=%i")
	if err == nil {
		return true
	}
	// "Invalid job id specified" is the only answer that means gone;
	// anything else (a controller that does not answer) is not proof.
	return !strings.Contains(err.Error(), "Invalid job id")
}

// sacct asks Slurm's accounting how a job the controller has forgotten
// ended (a gateway down for longer than MinJobAge). Without accounting
// (sacct fails) it reports false.
func (b *Backend) sacct(ctx context.Context, jid string) (job, bool) {
	out, err := b.command(ctx, "", "sacct", nil, nil, "--noheader", "--parsable2", "--allocations", "--jobs="+jid, "--format=JobID,State,NodeList,Timelimit")
	if err != nil {
		return job{}, false
	}
	return parseSacct(out, jid)
}

// parseSacct reads sacct's JobID|State|NodeList|Timelimit line for jid.
// The state may carry who did it ("CANCELLED by 1001").
func parseSacct(out, jid string) (job, bool) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) != 4 || f[0] != jid {
			continue
		}
		state, _, _ := strings.Cut(f[1], " ")
		if state == "" || !finished(state) {
			return job{}, false
		}
		node := f[2]
		if node == "None assigned" || node == "(null)" {
			node = ""
		}
		return job{ID: jid, State: state, Node: node, TimeLimit: f[3]}, true
	}
	return job{}, false
}

// Runners lists airlock's jobs that Slurm still runs or queues, by session
// id.
func (b *Backend) Runners(ctx context.Context) (map[string]string, error) {
	jobs, err := b.squeue(ctx)
	if err != nil {
		return nil, err
	}
	return runners(jobs, b.cfg.JobPrefix+"-"), nil
}

func runners(jobs []job, prefix string) map[string]string {
	out := map[string]string{}
	for _, j := range jobs {
		if id, ok := strings.CutPrefix(j.Name, prefix); ok && !finished(j.State) {
			out[id] = "job:" + j.ID
		}
	}
	return out
}

// Register accepts a runner's registration only from the node Slurm says
// the job runs on, and makes the endpoints from that node's address and the
// ports the runner reports: a runner cannot point the gateway anywhere else.
// A registration it will not accept is a backend.ErrRefused, saying why.
func (b *Backend) Register(ctx context.Context, id, ref string, from net.IP, reg registration.Registration) (backend.Event, error) {
	jid, err := jobID(ref)
	if err != nil {
		return backend.Event{}, err
	}
	mark := newMark()
	out, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--states=all", "--jobs="+jid, "--format="+mark+squeueFormat)
	if err != nil {
		return backend.Event{}, fmt.Errorf("register %s: %w", id, err)
	}
	jobs, err := parseSqueue(out, mark)
	if err != nil || len(jobs) != 1 {
		return backend.Event{}, fmt.Errorf("register %s: squeue on job %s: %v %d", id, jid, err, len(jobs))
	}
	j := jobs[0]
	if j.Name != b.JobName(id) {
		return backend.Event{}, fmt.Errorf("%w: job %s is not session %s's", backend.ErrRefused, jid, id)
	}
	if j.Node == "" {
		return backend.Event{}, fmt.Errorf("%w: job %s is %s, not running on a node", backend.ErrRefused, jid, j.State)
	}
	addr := strings.ReplaceAll(b.cfg.NodeAddress, "{node}", j.Node)
	ok, err := fromNode(ctx, from, addr, j.Node)
	if err != nil {
		return backend.Event{}, fmt.Errorf("register %s: %w", id, err)
	}
	if !ok {
		return backend.Event{}, fmt.Errorf("%w: it came from %s, but job %s runs on %s", backend.ErrRefused, from, jid, j.Node)
	}
	switch reg.Event {
	case contract.EventExit:
		b.mu.Lock()
		b.runnerExit[id] = reg.Reason
		b.mu.Unlock()
		b.poke()
		return backend.Event{}, nil
	case contract.EventReady:
		if j.State != "RUNNING" {
			return backend.Event{}, fmt.Errorf("%w: job %s is %s", backend.ErrRefused, jid, j.State)
		}
		if len(reg.Ports) == 0 || len(reg.Ports) > 16 {
			return backend.Event{}, fmt.Errorf("%w: %d ports", backend.ErrRefused, len(reg.Ports))
		}
		if len(reg.TLSSHA256) != 64 {
			return backend.Event{}, fmt.Errorf("%w: tls_sha256 must be 64 hex digits", backend.ErrRefused)
		}
		eps := map[string]string{}
		for name, p := range reg.Ports {
			if p < 1 || p > 65535 {
				return backend.Event{}, fmt.Errorf("%w: connector %q port %d", backend.ErrRefused, name, p)
			}
			eps[name] = net.JoinHostPort(addr, strconv.Itoa(p))
		}
		return backend.Event{Kind: contract.EventReady, Endpoints: eps, TLSSHA256: strings.ToLower(reg.TLSSHA256), Node: j.Node}, nil
	case contract.EventEgress:
		// From the job's node: the gateway audits reg.Egress itself.
		return backend.Event{}, nil
	}
	return backend.Event{}, fmt.Errorf("%w: event %q: want ready, exit or egress", backend.ErrRefused, reg.Event)
}

// fromNode reports whether ip is one of the node's addresses (by the
// address the gateway dials, or by its Slurm name).
func fromNode(ctx context.Context, ip net.IP, names ...string) (bool, error) {
	var lastErr error
	resolved := false
	for _, n := range names {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, n)
		if err != nil {
			lastErr = err
			continue
		}
		resolved = true
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				return true, nil
			}
		}
	}
	if !resolved {
		return false, fmt.Errorf("resolve node: %w", lastErr)
	}
	return false, nil
}

var _ backend.Adopter = (*Backend)(nil)

// Adopt takes over job jid for session id: the job must be account's and
// not finished. It is renamed to the session's job name, so everything
// that knows the gateway's jobs by name (Register's check, Runners and the
// gateway's reconcile) treats it as one it submitted. Renaming another
// user's job needs the gateway to be root or Slurm's operator, as
// submitting as them does.
func (b *Backend) Adopt(ctx context.Context, id, jid, account string) (backend.Adoption, error) {
	if !validJobID(jid) {
		return backend.Adoption{}, fmt.Errorf("adopt %s: job id %q: %w", id, jid, backend.ErrGone)
	}
	if account == "" {
		cur, err := user.Current()
		if err != nil {
			return backend.Adoption{}, fmt.Errorf("adopt %s: %w", id, err)
		}
		account = cur.Username
	}
	// As Start: no session runs as root, so no root job becomes one (a
	// portal user named root would otherwise match root's jobs).
	if u, err := user.Lookup(account); err != nil {
		return backend.Adoption{}, fmt.Errorf("adopt %s: account %s: %w", id, account, err)
	} else if u.Uid == "0" {
		return backend.Adoption{}, fmt.Errorf("adopt %s: job %s: sessions do not run as root: %w", id, jid, backend.ErrRefused)
	}
	b.adoptMu.Lock()
	defer b.adoptMu.Unlock()
	out, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--states=all", "--jobs="+jid, "--format=%i|%T|%u|%L|%j")
	if err != nil {
		if strings.Contains(err.Error(), "Invalid job id") {
			return backend.Adoption{}, fmt.Errorf("adopt %s: job %s: %w", id, jid, backend.ErrGone)
		}
		return backend.Adoption{}, fmt.Errorf("adopt %s: %w", id, err)
	}
	owner, state, left, name, err := parseAdoptLine(out, jid)
	if err != nil {
		return backend.Adoption{}, fmt.Errorf("adopt %s: %w", id, err)
	}
	if owner != account {
		return backend.Adoption{}, fmt.Errorf("adopt %s: job %s is %s's, not %s's: %w", id, jid, owner, account, backend.ErrRefused)
	}
	if state != "PENDING" && state != "RUNNING" {
		return backend.Adoption{}, fmt.Errorf("adopt %s: job %s is %s: %w", id, jid, state, backend.ErrGone)
	}
	if strings.HasPrefix(name, b.cfg.JobPrefix+"-") {
		// Renaming it again would take it from the session it runs.
		return backend.Adoption{}, fmt.Errorf("adopt %s: job %s is %s: %w", id, jid, name, backend.ErrTaken)
	}
	if _, err := b.command(ctx, "", "scontrol", nil, nil, "update", "JobId="+jid, "JobName="+b.JobName(id)); err != nil {
		// scontrol may have renamed it before it failed (a timeout):
		// a job of the prefix that no session has is one a gateway
		// cancels, so it gets its name back if it has the session's.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if uerr := b.unadopt(uctx, id, jid, name); uerr != nil {
			b.log.ErrorContext(ctx, "give a half-adopted job its name back", "session", id, "job", jid, "name", name, "error", uerr)
		}
		return backend.Adoption{}, fmt.Errorf("adopt %s: rename job %s: %w", id, jid, err)
	}
	b.log.InfoContext(ctx, "job adopted", "session", id, "job", jid, "owner", account)
	b.poke()
	return backend.Adoption{Ref: "job:" + jid, TimeLeft: left, Name: name}, nil
}

// Unadopt renames job jid back to name if it still has session id's job
// name; a job renamed since (or ended) is left alone.
func (b *Backend) Unadopt(ctx context.Context, id, jid, name string) error {
	if !validJobID(jid) {
		return fmt.Errorf("unadopt %s: job id %q: %w", id, jid, backend.ErrGone)
	}
	b.adoptMu.Lock()
	defer b.adoptMu.Unlock()
	return b.unadopt(ctx, id, jid, name)
}

// unadopt is Unadopt with adoptMu held.
func (b *Backend) unadopt(ctx context.Context, id, jid, name string) error {
	out, err := b.command(ctx, "", "squeue", nil, nil, "--noheader", "--states=all", "--jobs="+jid, "--format=%i|%T|%u|%L|%j")
	if err != nil {
		return fmt.Errorf("unadopt %s: %w", id, err)
	}
	_, _, _, cur, err := parseAdoptLine(out, jid)
	if err != nil {
		return fmt.Errorf("unadopt %s: %w", id, err)
	}
	if cur != b.JobName(id) {
		return nil
	}
	if _, err := b.command(ctx, "", "scontrol", nil, nil, "update", "JobId="+jid, "JobName="+name); err != nil {
		return fmt.Errorf("unadopt %s: rename job %s back to %q: %w", id, jid, name, err)
	}
	b.log.InfoContext(ctx, "job given back", "session", id, "job", jid, "name", name)
	return nil
}

// parseAdoptLine reads squeue's "ID|STATE|USER|TIMELEFT|NAME" line for job
// jid (the name last: it may hold "|"). A time left that is no duration
// (UNLIMITED, NOT_SET) is 0.
func parseAdoptLine(out, jid string) (owner, state string, left time.Duration, name string, err error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(strings.TrimSpace(line), "|", 5)
		if len(f) == 5 && f[0] == jid && f[1] != "" && f[2] != "" {
			left, _ := parseSlurmTime(f[3])
			return f[2], f[1], left, f[4], nil
		}
	}
	return "", "", 0, "", fmt.Errorf("squeue on job %s: no line for it in %q", jid, out)
}

// parseSlurmTime reads a Slurm duration in its own formats: D-HH[:MM[:SS]]
// (what squeue prints once a day is in it), HH:MM:SS, MM:SS, or minutes
// alone. Anything else (UNLIMITED, NOT_SET, INVALID) is false.
func parseSlurmTime(s string) (time.Duration, bool) {
	num := func(x string) (int, bool) {
		if x == "" || len(x) > 6 || strings.Trim(x, "0123456789") != "" {
			return 0, false
		}
		v, err := strconv.Atoi(x)
		return v, err == nil
	}
	var days int
	withDays := false
	if d, rest, ok := strings.Cut(s, "-"); ok {
		v, ok := num(d)
		if !ok || v > 36500 { // a century: well inside a Duration
			return 0, false
		}
		days, s, withDays = v, rest, true
	}
	f := strings.Split(s, ":")
	if len(f) > 3 {
		return 0, false
	}
	var v [3]int // hours, minutes, seconds
	for i, x := range f {
		n, ok := num(x)
		if !ok {
			return 0, false
		}
		switch {
		case withDays: // HH, HH:MM, HH:MM:SS
			v[i] = n
		case len(f) == 1: // minutes
			v[1] = n
		default: // MM:SS or HH:MM:SS
			v[3-len(f)+i] = n
		}
	}
	return time.Duration(days)*24*time.Hour + time.Duration(v[0])*time.Hour + time.Duration(v[1])*time.Minute + time.Duration(v[2])*time.Second, true
}
