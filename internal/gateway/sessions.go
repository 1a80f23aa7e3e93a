package gateway

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// LaunchRequest is what a user asks for; zero fields take the profile's
// defaults.
type LaunchRequest struct {
	Profile    string `json:"profile"`
	CPUs       int    `json:"cpus,omitempty"`
	MemoryMB   int    `json:"memory_mb,omitempty"`
	Lifetime   string `json:"lifetime,omitempty"`
	Persistent *bool  `json:"persistent,omitempty"`
	// KeepDisk (vm profiles whose image allows it) keeps the VM's disk
	// overlay in the owner's home between sessions.
	KeepDisk bool `json:"keep_disk,omitempty"`
	// NotifyEmail asks for an e-mail with the session's link when it is
	// ready (for a launch that waits in a queue).
	NotifyEmail bool `json:"notify_email,omitempty"`
	// SlurmJob adopts a Slurm job the user already runs (an Open OnDemand
	// session's) instead of submitting one: the job runs `airlock attach`,
	// which gets the runner's spec and environment in the answer.
	SlurmJob string `json:"slurm_job,omitempty"`
}

func (g *Gateway) profile(name string) (Profile, bool) {
	for _, p := range g.cfg.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

// allows reports whether a member of groups may launch p: anyone, if p
// names no groups.
func (p Profile) allows(groups []string) bool {
	if len(p.Groups) == 0 {
		return true
	}
	for _, g := range groups {
		if slices.Contains(p.Groups, g) {
			return true
		}
	}
	return false
}

// launchable returns the profile called name if id may launch it. One
// outside its groups is told the profile is not theirs (403), not that it
// does not exist: the name is in the configuration anyway.
func (g *Gateway) launchable(id identity, name string) error {
	p, ok := g.profile(name)
	if !ok {
		return apiErr(400, "unknown_profile", fmt.Sprintf("no profile named %q", name))
	}
	if !p.allows(id.groups) {
		return apiErr(403, "profile_forbidden", fmt.Sprintf("profile %q is for members of %s only", name, strings.Join(p.Groups, ", ")))
	}
	return nil
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "s-" + hex.EncodeToString(b)
}

// Launch checks the request against the profile and the limits, stores the
// session and starts its runner.
func (g *Gateway) Launch(ctx context.Context, user string, req LaunchRequest, remote string) (*session.Session, error) {
	s, _, err := g.launch(ctx, user, req, remote)
	return s, err
}

// launch is Launch; for a request that adopts a job (SlurmJob) it also
// returns what that job's runner needs: the spec and its environment.
func (g *Gateway) launch(ctx context.Context, user string, req LaunchRequest, remote string) (*session.Session, *backend.Job, error) {
	p, ok := g.profile(req.Profile)
	if !ok {
		return nil, nil, apiErr(400, "unknown_profile", fmt.Sprintf("no profile named %q", req.Profile))
	}
	var adopter backend.Adopter
	if req.SlurmJob != "" {
		a, ok := g.cfg.Backend.(backend.Adopter)
		if !ok {
			return nil, nil, apiErr(400, "not_slurm", "this gateway's sessions are not Slurm jobs: it cannot adopt job "+req.SlurmJob)
		}
		if g.accountsShared() {
			return nil, nil, apiErr(400, "shared_account", "this gateway runs every user's sessions as one Unix account, so it cannot tell whose Slurm job "+req.SlurmJob+" is; it adopts none")
		}
		if !validSlurmJob(req.SlurmJob) {
			return nil, nil, apiErr(400, "bad_request", "slurm_job: want a Slurm job id (digits)")
		}
		// Slurm reads ids as numbers ("0021" is job 21): the claim on
		// the job, and what squeue is matched against, take the one
		// spelling squeue prints.
		if req.SlurmJob = strings.TrimLeft(req.SlurmJob, "0"); req.SlurmJob == "" {
			return nil, nil, apiErr(400, "bad_request", "slurm_job: there is no Slurm job 0")
		}
		// The adopting user gets the spec and the ticket key in the
		// answer and runs the runner themselves: what the runner
		// enforces (a kiosk's site and allow-list, a clipboard direction)
		// is theirs to edit, and the key reaches the connector without the
		// gateway's recording. Controls against the user are not adopted.
		if p.Kiosk != nil || (p.Clipboard != "" && p.Clipboard != contract.ClipboardBoth) || p.Record {
			return nil, nil, apiErr(400, "not_adoptable", "profile "+p.Name+" has controls against its user (a kiosk, a clipboard policy or recording) that an adopted job's runner, run by the user, cannot keep; launch it without slurm_job")
		}
		adopter = a
	}
	grant, err := checkLaunch(p, req)
	if err != nil {
		return nil, nil, err
	}
	s := &session.Session{
		ID: newID(), Owner: user, Profile: p.Name, State: session.Queued, Persistent: grant.Persistent,
		CPUs: grant.CPUs, MemoryMB: grant.MemoryMB, Lifetime: grant.Lifetime, Created: g.now(), Backend: g.cfg.Backend.Name(),
	}
	account, err := g.accountName(user)
	if err != nil {
		return nil, nil, err
	}
	if account != "" && g.cfg.MakeAccount != nil {
		if err := g.cfg.MakeAccount(ctx, account); err != nil {
			g.log.ErrorContext(ctx, "make the session's account", "user", user, "account", account, "error", err)
			return nil, nil, apiErr(500, "no_account", fmt.Sprintf("your Unix account %s could not be made; tell an admin", account))
		}
	}
	if err := g.checkLimits(ctx, user); err != nil {
		g.metrics.failures.Add(1)
		g.audit(ctx, user, "launch_refused", "", remote, err.Error())
		return nil, nil, err
	}
	// The session caps are counted by the store as it inserts, in one
	// step: counting here and inserting after let concurrent launches all
	// pass the count.
	lim := store.Limits{MaxActive: g.cfg.Limits.MaxSessions, MaxActivePerOwner: g.cfg.Limits.MaxSessionsPerUser}
	if adopter != nil {
		return g.adoptLaunch(ctx, s, p, req, adopter, lim, remote)
	}
	if err := g.cfg.Store.CreateSessionWithin(ctx, s, lim); err != nil {
		if le, ok := errors.AsType[*store.LimitError](err); ok {
			err = limitRefusal(le)
			g.metrics.failures.Add(1)
			g.audit(ctx, user, "launch_refused", "", remote, err.Error())
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("launch: %w", err)
	}
	g.metrics.launches.Add(1)
	g.audit(ctx, user, "launch", s.ID, remote, "profile "+p.Name)
	spec, err := g.spec(s, p, req)
	if err == nil {
		job := backend.Job{ID: s.ID, Spec: spec, Owner: g.account(s), User: s.Owner, Profile: p.Name, CPUs: s.CPUs, MemoryMB: s.MemoryMB, Lifetime: s.Lifetime}
		if g.remote != nil {
			job.Env = g.remoteJobFor(s, p)
		}
		var ref string
		ref, err = g.cfg.Backend.Start(ctx, job)
		if err == nil {
			s, err = g.cfg.Store.UpdateSession(ctx, s.ID, func(s *session.Session) error {
				s.BackendRef = ref
				if g.remote != nil {
					// Queued until the scheduler starts the job.
					return nil
				}
				return s.Move(session.Starting, "", g.now())
			})
		}
	}
	if err != nil {
		g.metrics.failures.Add(1)
		// The backend's own words (sbatch's stderr, host paths) are for the
		// log: the user is told only that it failed (see apiError).
		g.log.ErrorContext(ctx, "launch failed", "session", s.ID, "error", err)
		if eerr := g.end(ctx, s.ID, "could not start; the cause is in the gateway's log"); eerr != nil {
			g.log.ErrorContext(ctx, "mark a failed launch ended", "session", s.ID, "error", eerr)
		}
		return nil, nil, &apiError{Status: 500, Code: "launch_failed",
			Message: "the session could not be started; the cause has been logged", cause: err}
	}
	g.watch(s.ID, s.BackendRef)
	return s, nil, nil
}

// adoptClaimTTL bounds how long an adoption holds its claim on a job in
// a store several gateways share; the adoption's talk with the scheduler
// gets half of it, so the claim outlives it even on a slow scheduler.
const adoptClaimTTL = 2 * time.Minute

// adoptLaunch is launch for a request that adopts the user's Slurm job.
// The job is renamed first and the session stored after, so a job the
// scheduler will not give (another user's, ended, taken) leaves no session
// behind and counts no launch; a session that cannot be stored after the
// rename gives the job its name back and is a 503 "try again", never an
// ended session whose job the gateway would then cancel.
//
// Gateways on one store claim the job there before asking the scheduler
// (a lease named after the job's id, one holder at a time): the
// scheduler's read of the job's name and its rename are two commands, and
// two gateways between them would both find the job free. Once renamed,
// the job's name says it is taken (backend.ErrTaken), so the claim is
// needed only until the session is stored.
func (g *Gateway) adoptLaunch(ctx context.Context, s *session.Session, p Profile, req LaunchRequest, adopter backend.Adopter, lim store.Limits, remote string) (*session.Session, *backend.Job, error) {
	user, jid := s.Owner, req.SlurmJob
	refused := func(err error) (*session.Session, *backend.Job, error) {
		g.metrics.failures.Add(1)
		g.audit(ctx, user, "adopt_refused", "", remote, "slurm job "+jid+": "+err.Error())
		return nil, nil, err
	}
	if l := g.claims; l != nil {
		name := "adopt-job:" + jid
		got, err := l.TakeLease(ctx, name, s.ID, g.now(), adoptClaimTTL)
		if err != nil {
			g.metrics.failures.Add(1)
			return nil, nil, storeFault("claim slurm job "+jid, err)
		}
		if !got {
			g.log.WarnContext(ctx, "adoption refused: another launch holds the job", "user", user, "job", jid)
			return refused(adoptRefusal(backend.ErrTaken, jid))
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := l.ReleaseLease(rctx, name, s.ID); err != nil {
				// It expires after adoptClaimTTL anyway.
				g.log.WarnContext(ctx, "release the claim on an adopted job", "job", jid, "error", err)
			}
		}()
	}
	spec, err := g.spec(s, p, req)
	if err != nil {
		g.metrics.failures.Add(1)
		g.log.ErrorContext(ctx, "adoption failed", "session", s.ID, "job", jid, "error", err)
		return nil, nil, &apiError{Status: 500, Code: "launch_failed",
			Message: "the session could not be started; the cause has been logged", cause: err}
	}
	job := backend.Job{ID: s.ID, Spec: spec, Owner: g.account(s), User: s.Owner, Profile: p.Name, CPUs: s.CPUs, MemoryMB: s.MemoryMB, Lifetime: s.Lifetime}
	job.Env = g.remoteJobFor(s, p)
	actx, cancel := context.WithTimeout(ctx, adoptClaimTTL/2)
	ad, err := adopter.Adopt(actx, s.ID, jid, job.Owner)
	cancel()
	if refusal := adoptRefusal(err, jid); refusal != nil {
		g.log.WarnContext(ctx, "adoption refused", "session", s.ID, "user", user, "job", jid, "error", err)
		return refused(refusal)
	}
	if err != nil {
		// The scheduler did not answer; the backend gave the job back
		// its name if the rename may have happened.
		g.metrics.failures.Add(1)
		g.log.ErrorContext(ctx, "adoption failed", "session", s.ID, "user", user, "job", jid, "error", err)
		return nil, nil, &apiError{Status: 503, Code: "scheduler_unavailable",
			Message: "Slurm did not answer; your job is as it was: try again in a few seconds", cause: err}
	}
	s.BackendRef = ad.Ref
	if ad.TimeLeft > 0 && (s.Lifetime <= 0 || ad.TimeLeft < s.Lifetime) {
		// The job ends at Slurm's limit: so does the session.
		s.Lifetime = ad.TimeLeft
	}
	if g.remote == nil {
		if err := s.Move(session.Starting, "", g.now()); err != nil {
			return nil, nil, err
		}
	}
	if err := g.cfg.Store.CreateSessionWithin(ctx, s, lim); err != nil {
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), adoptClaimTTL/2)
		defer ucancel()
		if uerr := adopter.Unadopt(uctx, s.ID, jid, ad.Name); uerr != nil {
			// Left with the session's name, the job is one the leading
			// gateway cancels as having no session: say so loudly.
			g.log.ErrorContext(ctx, "give an adopted job its name back", "session", s.ID, "job", jid, "name", ad.Name, "error", uerr)
		}
		g.metrics.failures.Add(1)
		if le, ok := errors.AsType[*store.LimitError](err); ok {
			err = limitRefusal(le)
			g.audit(ctx, user, "launch_refused", "", remote, err.Error())
			return nil, nil, err
		}
		g.log.ErrorContext(ctx, "store an adopted job's session", "session", s.ID, "job", jid, "error", err)
		return nil, nil, storeFault("store adopted session", err)
	}
	g.metrics.launches.Add(1)
	g.audit(ctx, user, "launch", s.ID, remote, "profile "+p.Name)
	g.audit(ctx, user, "adopt", s.ID, remote, "slurm job "+jid)
	g.watch(s.ID, s.BackendRef)
	return s, &job, nil
}

// validSlurmJob reports whether id is a plain Slurm job id: what squeue
// and scontrol are given must be nothing else.
func validSlurmJob(id string) bool {
	if id == "" || len(id) > 20 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// adoptRefusal is the answer to an adoption the backend would not make:
// another user's job is a 403, a job the scheduler does not run or queue
// a 404, a job already adopted (or submitted by a gateway) a 409. Anything else (the scheduler did not answer) is nil: a fault.
func adoptRefusal(err error, jid string) error {
	switch {
	case errors.Is(err, backend.ErrRefused):
		return apiErr(403, "not_your_job", "Slurm job "+jid+" is not yours")
	case errors.Is(err, backend.ErrGone):
		return apiErr(404, "no_such_job", "Slurm job "+jid+" is not queued or running")
	case errors.Is(err, backend.ErrTaken):
		return apiErr(409, "job_taken", "Slurm job "+jid+" is already a session's")
	}
	return nil
}

// launchGrant is what a launch request is granted within its profile.
type launchGrant struct {
	CPUs, MemoryMB int
	Lifetime       time.Duration
	Persistent     bool
}

// checkLaunch checks a launch request against its profile and returns
// what the session gets: the profile's defaults where the request is
// silent. It is pure (no store, no clock, no node state), so every rule is
// unit-tested (TestCheckLaunch); Launch adds the limits that depend on the
// node and the store. Refusals are 400s naming the field.
func checkLaunch(p Profile, req LaunchRequest) (launchGrant, error) {
	gr := launchGrant{CPUs: p.CPUs, MemoryMB: p.MemoryMB, Lifetime: p.Lifetime, Persistent: true}
	if req.Persistent != nil {
		gr.Persistent = *req.Persistent
	}
	if req.CPUs != 0 {
		if req.CPUs < 1 || (p.MaxCPUs > 0 && req.CPUs > p.MaxCPUs) {
			return launchGrant{}, apiErr(400, "over_limit", fmt.Sprintf("cpus %d: this profile allows 1 to %d", req.CPUs, p.MaxCPUs))
		}
		gr.CPUs = req.CPUs
	}
	if req.MemoryMB != 0 {
		if req.MemoryMB < 64 || (p.MaxMemoryMB > 0 && req.MemoryMB > p.MaxMemoryMB) {
			return launchGrant{}, apiErr(400, "over_limit", fmt.Sprintf("memory %d MB: this profile allows 64 to %d MB", req.MemoryMB, p.MaxMemoryMB))
		}
		gr.MemoryMB = req.MemoryMB
	}
	if req.Lifetime != "" {
		d, err := time.ParseDuration(req.Lifetime)
		if err != nil || d <= 0 {
			return launchGrant{}, apiErr(400, "bad_request", fmt.Sprintf("lifetime %q: want a duration like 2h", req.Lifetime))
		}
		if p.MaxLifetime > 0 && d > p.MaxLifetime {
			return launchGrant{}, apiErr(400, "over_limit", fmt.Sprintf("lifetime %s: this profile allows at most %s", d, p.MaxLifetime))
		}
		gr.Lifetime = d
	}
	if req.KeepDisk && (p.VM == nil || !p.VM.PersistentAllowed) {
		return launchGrant{}, apiErr(400, "not_allowed", fmt.Sprintf("profile %s: keep_disk: this profile's image does not keep disks", p.Name))
	}
	return gr, nil
}

// limitRefusal is what a user is told when the store refused a session
// over a cap: which limit, as the configuration names it.
func limitRefusal(le *store.LimitError) error {
	if le.PerOwner {
		return apiErr(429, "too_many_sessions", fmt.Sprintf("you have %d sessions, the most allowed (max_sessions_per_user: %d); stop one first", le.Active, le.Max))
	}
	return apiErr(429, "node_full", fmt.Sprintf("this node runs its maximum of %d sessions (max_sessions); try later", le.Max))
}

// checkLimits refuses a launch the node cannot take now (load, memory),
// with the reason. The session caps are the store's (see Launch).
func (g *Gateway) checkLimits(ctx context.Context, user string) error {
	l := g.cfg.Limits
	if g.remote != nil {
		// This machine's load and memory say nothing of the nodes: the
		// scheduler places the session and queues it when they are full.
		return nil
	}
	if l.MaxLoad > 0 {
		load, err := g.readLoad()
		switch {
		case err != nil:
			// Unknown load does not refuse a launch; the log says the
			// limit is not being applied.
			g.log.WarnContext(ctx, "read the load average; max_load not checked", "error", err)
		case load > l.MaxLoad:
			return apiErr(503, "node_busy", fmt.Sprintf("the node is busy (load %.2f per CPU, limit %.2f); try later", load, l.MaxLoad))
		}
	}
	if l.MinFreeMemoryMB > 0 {
		free, err := freeMemoryMB()
		switch {
		case err != nil:
			g.log.WarnContext(ctx, "read free memory; min_free_memory_mb not checked", "error", err)
		case free < l.MinFreeMemoryMB:
			return apiErr(503, "node_busy", fmt.Sprintf("the node is short of memory (%d MB free, need %d MB); try later", free, l.MinFreeMemoryMB))
		}
	}
	return nil
}

func loadPerCPU() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty /proc/loadavg")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg: %w", err)
	}
	return v / float64(runtime.NumCPU()), nil
}

func freeMemoryMB() (int, error) { return memInfoMB("MemAvailable:") }

// memInfoMB reads one "Key: N kB" line of /proc/meminfo, in MiB.
func memInfoMB(key string) (int, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", key)
}

// account is the Unix account session s runs as (see accountName); ""
// is the gateway's own. Launch has refused users without a valid one.
func (g *Gateway) account(s *session.Session) string {
	name, _ := g.accountName(s.Owner)
	return name
}

// hidden is what every session's seal masks: the state directory (keys,
// database, certificate, sessions' ticket keys and sockets), the
// recordings wherever they are kept, and the configured secret files. On a remote node, paths that do not exist there
// are skipped by the runner.
func (g *Gateway) hidden() []string {
	var out []string
	for _, p := range append([]string{g.cfg.StateDir, g.cfg.Recordings.Dir}, g.cfg.Hide...) {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil && abs != "/" {
			out = append(out, abs)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (g *Gateway) sessionDir(id string) string { return filepath.Join(g.cfg.StateDir, "sessions", id) }

// spec builds the runner's spec for a session of profile p: connectors on
// UNIX sockets in the session's directory (the gateway is on this node;
// the directory's mode guards them), the ticket key derived for this session.
//
// For a remote backend the connectors listen on TCP on every address of the
// node (port 0: the kernel picks; the runner registers the ports), the key
// comes in the job's environment, the job runs as the owner already, and
// the scheduler enforces the lifetime (the job's time limit).
func (g *Gateway) spec(s *session.Session, p Profile, req LaunchRequest) ([]byte, error) {
	spec := contract.Spec{ID: s.ID, Hide: g.hidden()}
	dir := g.sessionDir(s.ID)
	listen := func(name string) string { return "unix:" + filepath.Join(dir, name+".sock") }
	if g.remote != nil {
		spec.TicketKeyEnv = registration.EnvTicketKey
		listen = func(string) string { return "tcp::0" }
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		k := g.sessionKey(s.ID)
		keyFile := filepath.Join(dir, "ticket.key")
		if err := os.WriteFile(keyFile, k[:], 0o600); err != nil {
			return nil, err
		}
		spec.TicketKeyFile = keyFile
		spec.Owner = g.account(s)
		spec.Lifetime = contract.Duration(s.Lifetime)
	}
	switch p.Kind {
	case "desktop":
		console := profileConnectors(p.Kind)[0]
		console.Target, console.Listen = "127.0.0.1:5901", listen(console.Name)
		console.Clipboard = p.Clipboard
		if p.VNCPassword {
			console.SessionVNCPasswordFile = sessionVNCPasswordFile
		}
		spec.Workload = contract.Command{Argv: xvncArgv(p)}
		progs := p.Programs
		if len(progs) == 0 {
			progs = [][]string{{"xterm"}}
		}
		if p.Kiosk != nil {
			// The browser is the only program: an xterm beside it would
			// be a way around the kiosk.
			progs = nil
			k, err := kioskSpec(p.Kiosk, cmp.Or(p.Geometry, "1280x800"))
			if err != nil {
				return nil, fmt.Errorf("profile %s: %w", p.Name, err)
			}
			spec.Kiosk = k
		}
		for _, argv := range progs {
			spec.Processes = append(spec.Processes, contract.Command{Argv: argv, Env: map[string]string{"DISPLAY": ":1"}})
		}
		spec.Connectors = []contract.ConnectorSpec{console}
		if p.RDP && g.rdp != nil {
			switch p.RDPServer {
			case "", RDPServerXrdp:
				spec.Processes = append(spec.Processes, xrdpProcess(p.Clipboard != contract.ClipboardNone))
			case RDPServerShadow:
				spec.Processes = append(spec.Processes, shadowProcess())
				if err := g.shadowLogon(&spec, p, s, dir); err != nil {
					return nil, fmt.Errorf("profile %s: %w", p.Name, err)
				}
			default:
				return nil, fmt.Errorf("profile %s: rdp server %q: want %s or %s", p.Name, p.RDPServer, RDPServerXrdp, RDPServerShadow)
			}
			if err := g.rdpConnector(&spec, dir, listen(ConnRDP)); err != nil {
				return nil, err
			}
		}
	case "app":
		target := "127.0.0.1:" + strconv.Itoa(p.Port)
		if p.Socket != "" {
			target = "unix:" + p.Socket
		}
		// The URL path the app is served under: "/" on its own host.
		app := profileConnectors(p.Kind)[0]
		prefix := "/"
		if !g.appsOwnOrigin() {
			prefix = "/s/" + s.ID + "/" + app.Name + "/" // where the gateway serves it
		}
		argv := make([]string, len(p.Command))
		for i, a := range p.Command {
			argv[i] = strings.NewReplacer("{port}", strconv.Itoa(p.Port), "{socket}", p.Socket, "{prefix}", prefix).Replace(a)
		}
		spec.Workload = contract.Command{Argv: argv, Env: map[string]string{
			"PORT": strconv.Itoa(p.Port), "AIRLOCK_PREFIX": prefix}}
		app.Target, app.Listen = target, listen(app.Name)
		spec.Connectors = []contract.ConnectorSpec{app}
	case "vm":
		if err := g.vmSpec(&spec, s, p, dir, listen, req.KeepDisk); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("profile %s: kind %q cannot be launched here", p.Name, p.Kind)
	}
	return json.Marshal(spec)
}

// kioskSpec is the runner's kiosk for profile kiosk k on a desktop of
// geometry: its CA file is read now, so the runner (perhaps on another
// node) needs no copy.
func kioskSpec(k *Kiosk, geometry string) (*contract.KioskSpec, error) {
	ks := &contract.KioskSpec{URL: k.URL, Browser: k.Browser, Allow: k.Allow, Display: ":1", Geometry: geometry}
	if k.CAFile != "" {
		b, err := os.ReadFile(k.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kiosk CA: %w", err)
		}
		ks.CAPEM = string(b)
	}
	return ks, nil
}

// profileConnectors are the connectors (name and kind) a session of a
// profile kind has; the spec builder adds where each listens and what it
// reaches, and the session page offers each as its kind's registered View
// says.
func profileConnectors(kind string) []contract.ConnectorSpec {
	switch kind {
	case "desktop", "vm":
		return []contract.ConnectorSpec{{Name: contract.ConnConsole, Kind: contract.KindVNC}}
	case "app":
		return []contract.ConnectorSpec{{Name: contract.ConnApp, Kind: contract.KindHTTP}}
	}
	return nil
}

// connectorView is how the session page offers connector name of a
// session of profile p: its kind's registered View. A session whose
// profile has left the configuration since it started is looked up by
// its connector's name among every profile kind's.
func connectorView(p Profile, name string) contract.View {
	kinds := []string{p.Kind}
	if p.Kind == "" {
		kinds = profileKinds
	}
	for _, kind := range kinds {
		for _, c := range profileConnectors(kind) {
			if c.Name == name {
				if k, ok := contract.Lookup(c.Kind); ok {
					return k.View
				}
			}
		}
	}
	return contract.ViewNone
}

// profileKinds are the profile kinds a gateway launches.
var profileKinds = []string{"desktop", "app", "vm"}

// sessionVNCPasswordFile is where, in the seal's private /tmp, the runner
// writes a desktop's per-session VNC password for Xvnc (vnc_password).
const sessionVNCPasswordFile = "/tmp/.airlock-vncpasswd"

// xvncArgv is a desktop's X server command line: the profile's Xvnc on a
// fixed display and port (the seal has its own network and /tmp), asking
// for the per-session password when the profile has one.
func xvncArgv(p Profile) []string {
	geo, depth := cmp.Or(p.Geometry, "1280x800"), cmp.Or(p.Depth, 24)
	security := []string{"-SecurityTypes", "None"}
	if p.VNCPassword {
		security = []string{"-SecurityTypes", "VncAuth", "-PasswordFile", sessionVNCPasswordFile}
	}
	argv := []string{cmp.Or(p.Xvnc, "Xvnc"), ":1", "-rfbport", "5901", "-localhost"}
	argv = append(argv, security...)
	argv = append(argv, "-geometry", geo, "-depth", strconv.Itoa(depth), "-AlwaysShared", "-desktop", p.Title)
	return append(argv, xvncNoBlacklist...)
}

// xvncNoBlacklist turns off Xvnc's blacklist of hosts that connect without
// authenticating. Every viewer reaches Xvnc through the connector, from
// 127.0.0.1 inside the seal, so TigerVNC's default (five unauthenticated
// connections block the address for 10 s, doubling each time) would let
// one viewer who opens and drops a few connections lock every other viewer
// out. With a timeout of 0 a "blocked" host may retry at once (TigerVNC
// 1.12: Blacklist::isBlackmarked); -UseBlacklist=0 would say it more
// plainly but older TigerVNC refuses to start on an unknown parameter.
// The connector already authenticates each viewer with its ticket.
var xvncNoBlacklist = []string{"-BlacklistTimeout", "0"}

// watch follows a session's runner until it ends, updating the store.
//
// With several gateways only the one leading the background work follows
// runners (lease.go): elsewhere this does nothing, and the leader adopts
// the session within a lease round.
func (g *Gateway) watch(id, ref string) {
	if !g.lease.leading() {
		return
	}
	g.mu.Lock()
	if _, ok := g.watching[id]; ok || g.closed {
		g.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(g.ctx)
	g.watching[id] = cancel
	// Added under the lock that checked closed: Close sets closed under it
	// before it waits, so its Wait cannot start between the check and the
	// Add and return while this watcher still runs.
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		defer func() {
			g.mu.Lock()
			delete(g.watching, id)
			g.mu.Unlock()
			cancel()
		}()
		ch, err := g.cfg.Backend.Watch(ctx, id, ref)
		if err != nil {
			// A gateway closing cancels ctx: the next start re-attaches.
			if eerr := g.end(ctx, id, "runner lost: "+err.Error()); eerr != nil && ctx.Err() == nil {
				g.log.ErrorContext(ctx, "end a session whose runner is lost", "session", id, "watch_error", err, "error", eerr)
			}
			return
		}
		for e := range ch {
			g.apply(ctx, id, e)
		}
	}()
}

func (g *Gateway) apply(ctx context.Context, id string, e backend.Event) {
	if e.Kind == contract.EventEgress {
		// A kiosk's proxy's decision: the audit's, not the session's state.
		detail := e.Verdict + " " + e.Target
		if e.Reason != "" {
			detail += ": " + e.Reason
		}
		g.audit(ctx, "", "egress", id, "", detail)
		return
	}
	_, err := g.cfg.Store.UpdateSession(ctx, id, func(s *session.Session) error {
		switch e.Kind {
		case contract.EventQueued:
			// Events from the poller may trail a registration: only a
			// session still queued takes the queue's reason.
			if s.State == session.Queued {
				s.Reason = e.Reason
			}
		case contract.EventStarting:
			if s.State == session.Queued {
				s.Reason = "" // the queue's reason no longer holds
				if e.Node != "" {
					s.Node = e.Node
				}
				return s.Move(session.Starting, "", g.now())
			}
		case contract.EventReady:
			if s.State == session.Stopping || s.State == session.Ended {
				return nil
			}
			s.Endpoints, s.TLSSHA256, s.Node = e.Endpoints, e.TLSSHA256, e.Node
			if s.State == session.Queued {
				s.Reason = ""
			}
			return s.Move(session.Ready, "", g.now())
		case contract.EventExit:
			if s.State == session.Ended {
				return nil
			}
			reason := e.Reason
			if s.State == session.Stopping && s.Reason != "" {
				reason = "" // keep why it was stopped ("stopped by alice"), not the signal
			}
			return s.Move(session.Ended, reason, g.now())
		}
		return nil
	})
	if err != nil {
		g.log.WarnContext(ctx, "apply runner event", "session", id, "event", e.Kind, "error", err)
		return
	}
	g.log.InfoContext(ctx, "session "+string(e.Kind), "session", id, "reason", e.Reason)
	if e.Kind == contract.EventExit {
		g.revoke(ctx, revokeEvent{Reason: "session ended", Session: id})
		g.audit(ctx, "", "ended", id, "", e.Reason)
		g.forgetTouch(id)
		if err := os.RemoveAll(g.sessionDir(id)); err != nil {
			g.log.WarnContext(ctx, "remove an ended session's directory", "session", id, "error", err)
		}
	}
}

// end marks a session ended with reason (when there is no runner to say so).
func (g *Gateway) end(ctx context.Context, id, reason string) error {
	_, err := g.cfg.Store.UpdateSession(ctx, id, func(s *session.Session) error {
		if s.State == session.Ended {
			return nil
		}
		return s.Move(session.Ended, reason, g.now())
	})
	if err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	return nil
}

// Stop asks a session's runner to end it.
func (g *Gateway) Stop(ctx context.Context, actor, id, reason, remote string) error {
	s, err := g.cfg.Store.UpdateSession(ctx, id, func(s *session.Session) error {
		if s.State == session.Ended || s.State == session.Stopping {
			return nil
		}
		return s.Move(session.Stopping, reason, g.now())
	})
	if err != nil {
		return err
	}
	g.audit(ctx, actor, "stop", id, remote, reason)
	// Its viewers end now, not when the runner has torn the session down.
	g.revoke(ctx, revokeEvent{Reason: "session stopped", Session: id})
	if isForward(s) {
		// Closing the tunnel tells the node: its next dial is refused
		// (410) and it ends the app. The tunnel closes even when the
		// store cannot record the end: the session is Stopping already,
		// which refuses a new tunnel too.
		g.dropForward(id)
		if err := g.end(ctx, id, reason); err != nil {
			return storeFault("end a forward", err)
		}
		return nil
	}
	if s.State == session.Ended {
		return nil
	}
	if err := g.cfg.Backend.Stop(ctx, id, s.BackendRef); err != nil {
		if errors.Is(err, backend.ErrGone) {
			if err := g.end(ctx, id, reason); err != nil {
				return storeFault("end a session whose runner is gone", err)
			}
			return nil
		}
		return fmt.Errorf("stop session %s: %w", id, err)
	}
	return nil
}

// stopAllReport is what POST /api/v1/admin/stop-all answers: how many
// sessions are stopping, and each one that could not be stopped with what
// its admin may be told (a 5xx cause is only logged).
type stopAllReport struct {
	Stopping int             `json:"stopping"`
	Failed   []stopAllFailed `json:"failed"`
}

type stopAllFailed struct {
	Session string    `json:"session"`
	Error   *apiError `json:"error"`
}

// stopAll stops every queued, starting and ready session for admin actor,
// carrying on past sessions that fail to stop.
func (g *Gateway) stopAll(ctx context.Context, actor, remote string) (stopAllReport, error) {
	ss, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready}})
	if err != nil {
		return stopAllReport{}, storeFault("list sessions to stop", err)
	}
	rep := stopAllReport{Failed: []stopAllFailed{}}
	for _, s := range ss {
		if err := g.Stop(ctx, actor, s.ID, "stopped by admin "+actor, remote); err != nil {
			g.log.ErrorContext(ctx, "stop-all: stop session", "session", s.ID, "error", err)
			rep.Failed = append(rep.Failed, stopAllFailed{Session: s.ID, Error: asAPIError(err)})
			continue
		}
		rep.Stopping++
	}
	return rep, nil
}

// reattach follows every session the store has as alive; the backend says
// which runners are gone.
func (g *Gateway) reattach(ctx context.Context) error {
	live, err := g.cfg.Store.ListSessions(ctx, store.SessionFilter{States: []session.State{session.Queued, session.Starting, session.Ready, session.Stopping}})
	if err != nil {
		return fmt.Errorf("gateway: list sessions to re-attach: %w", err)
	}
	for _, s := range live {
		if isForward(s) {
			// No runner: the node dials back in, or the grace ends it.
			g.adoptForward(s, true)
			continue
		}
		if s.BackendRef == "" {
			if err := g.end(ctx, s.ID, "gateway restarted before the runner started"); err != nil {
				// Left as it is: the next start tries again.
				g.log.WarnContext(ctx, "end a session that never started", "session", s.ID, "error", err)
			}
			continue
		}
		g.log.InfoContext(ctx, "re-attaching", "session", s.ID, "ref", s.BackendRef)
		g.watch(s.ID, s.BackendRef)
	}
	return nil
}

// janitor ends idle sessions and single-shot sessions whose last viewer
// left.
func (g *Gateway) janitor() {
	defer g.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	listFailing := false
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.pruneTouches()
		g.heartbeat()
		if !g.lease.leading() {
			// Another gateway ends idle sessions (lease.go).
			continue
		}
		live, err := g.cfg.Store.ListSessions(g.ctx, store.SessionFilter{States: []session.State{session.Ready}})
		if err != nil {
			if g.ctx.Err() != nil {
				return
			}
			// Said once when it starts failing, not every second: while
			// the store cannot list, no idle session is ended.
			if !listFailing {
				g.log.ErrorContext(g.ctx, "janitor: list ready sessions; idle and single-shot sessions are not ended until the store answers", "error", err)
			}
			listFailing = true
			continue
		}
		if listFailing {
			g.log.InfoContext(g.ctx, "janitor: the store lists sessions again")
			listFailing = false
		}
		now := g.now()
		g.reapForwards(live, now)
		for _, s := range live {
			if isForward(s) {
				continue // forwardJanitor, reapForwards
			}
			g.mu.Lock()
			viewers := g.viewers[s.ID]
			g.mu.Unlock()
			if viewers > 0 {
				continue
			}
			last := s.LastSeen
			if last.IsZero() {
				last = s.Started
			}
			reason := ""
			if !s.Persistent && !s.LastSeen.IsZero() && now.Sub(s.LastSeen) > g.cfg.Limits.SingleShotGrace {
				reason = "single-shot session: the last viewer left"
			} else if p, ok := g.profile(s.Profile); ok && p.IdleTimeout > 0 && now.Sub(last) > p.IdleTimeout {
				reason = fmt.Sprintf("idle for %s with no viewer", p.IdleTimeout)
			}
			if reason == "" {
				continue
			}
			if err := g.Stop(g.ctx, "", s.ID, reason, ""); err != nil && g.ctx.Err() == nil {
				g.log.ErrorContext(g.ctx, "janitor: stop session", "session", s.ID, "reason", reason, "error", err)
			}
		}
	}
}
