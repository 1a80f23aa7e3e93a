// Package runner is `airlock run`: it reads a session spec, binds every
// connector listener in the host's network namespace, makes the seal,
// starts the workload and the connectors inside it, reports "ready" and
// "exit" as JSON lines, and tears everything down when the session ends:
// on SIGTERM or SIGINT, when the workload or a connector exits, when the
// lifetime is over, or when its parent dies.
//
// The runner never touches the gateway's store; it reports on stdout (and,
// later, to the gateway over the network), so a gateway restart loses
// nothing.
package runner

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/seal"
	"github.com/airlock-hpc/airlock/internal/seal/fdpass"
	"github.com/airlock-hpc/airlock/internal/ticket"
	"golang.org/x/sys/unix"
)

// Config is what Run needs besides the spec.
type Config struct {
	Spec *Spec
	// Stdout receives the JSON event lines.
	Stdout io.Writer
	// Stderr receives the seal's processes' output. Default os.Stderr.
	Stderr io.Writer
	Logger *slog.Logger
	// Exe is the airlock binary to re-execute inside the seal. Default /proc/self/exe.
	Exe string
	// LogFormat ("text" or "json") is passed on to init and the connectors,
	// so one session logs in one format.
	LogFormat string
	// OutliveParent keeps the session running when the runner's parent
	// exits. The local backend sets it: a gateway restart must not end
	// sessions. Everyone else wants the default, so that a runner nobody
	// supervises does not keep a session alive.
	OutliveParent bool
	// Register, when set, reports ready and exit to the gateway over HTTPS
	// as well (a runner in a batch job). A refused ready registration ends
	// the session: nobody could reach it.
	Register *registration.Client
}

// Event is one line the runner prints on stdout; ConnectorSecrets is what
// it writes to a connector's --secrets-fd. Both are the contract's.
type (
	Event            = contract.Event
	ConnectorSecrets = contract.ConnectorSecrets
)

// Run runs one session to its end and returns the process exit code: the
// workload's code when it ended the session, 0 when the session was
// stopped or its lifetime ran out, 1 when it could not start.
func Run(ctx context.Context, cfg Config) int {
	r := &run{cfg: cfg, spec: cfg.Spec}
	r.log = cmp.Or(cfg.Logger, slog.Default()).With("component", "runner", "session", cfg.Spec.ID)
	code, err := r.run(ctx)
	if err != nil {
		r.log.ErrorContext(ctx, "session failed", "error", err)
		r.emit(Event{Kind: contract.EventExit, ID: r.spec.ID, Reason: err.Error(), Code: code})
		r.registerExit(err.Error(), code)
	}
	return code
}

// registerReady tells the gateway the connectors' ports. It runs beside
// the session, retrying while the gateway is unreachable; a refusal is sent
// on failed.
func (r *run) registerReady(ctx context.Context, endpoints map[string]string, sha string, warnings []string, failed chan<- error) {
	reg, err := ReadyRegistration(endpoints, sha)
	if err != nil {
		failed <- err
		return
	}
	// The gateway hears of a fallback to the pod's isolation from here:
	// a pod's stdout reaches nobody.
	reg.Warnings = warnings[:min(len(warnings), registration.MaxWarnings)]
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	if err := r.cfg.Register.Send(ctx, reg); err != nil {
		failed <- err
		return
	}
	r.log.InfoContext(ctx, "registered with the gateway", "ports", reg.Ports)
}

// ReadyRegistration is the registration a runner sends when its
// connectors listen at endpoints (by name) with the certificate whose
// SHA-256 is sha: their ports only, since the gateway dials the node the
// scheduler names.
func ReadyRegistration(endpoints map[string]string, sha string) (registration.Registration, error) {
	reg := registration.Registration{Event: contract.EventReady, Ports: map[string]int{}, TLSSHA256: sha}
	for name, addr := range endpoints {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return registration.Registration{}, fmt.Errorf("connector %s listens on %s: only TCP can be registered", name, addr)
		}
		reg.Ports[name], _ = strconv.Atoi(p)
	}
	return reg, nil
}

// EncodeEvent is an event as the runner prints it: one JSON line.
func EncodeEvent(e Event) []byte {
	b, _ := json.Marshal(e) // plain data: cannot fail
	return append(b, '\n')
}

// registerExit tells the gateway why the session ended, briefly: the
// scheduler reports the job's end anyway.
func (r *run) registerExit(reason string, code int) {
	if r.cfg.Register == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := r.cfg.Register.Send(ctx, registration.Registration{Event: contract.EventExit, Reason: reason, Code: code})
	if err != nil {
		r.log.Warn("could not tell the gateway the session ended", "error", err)
	}
}

// registerTimeout bounds how long a runner keeps a session up while the
// gateway cannot be reached to register it (a gateway restart takes
// seconds; an admin's upgrade, minutes).
const registerTimeout = 10 * time.Minute

type run struct {
	cfg  Config
	spec *Spec
	log  *slog.Logger

	emitMu sync.Mutex
	// cleanup is what to remove at the end, in reverse order.
	cleanup []string
}

func (r *run) emit(e Event) {
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.cfg.Stdout.Write(EncodeEvent(e))
}

// run is the session's life in three steps: setup (everything made
// outside the seal), sealConfig (what runs inside it: the workload, its
// helpers and the connectors) and supervise (until it ends). Each step's
// clean-up is deferred here, so a failure at any point undoes the ones
// before it.
func (r *run) run(ctx context.Context) (code int, err error) {
	// Our parent dying is a reason to end: a runner nobody supervises must
	// not keep a session alive. (Set here, on whichever thread; the kernel
	// signals every thread of a child whose parent exits.)
	if !r.cfg.OutliveParent {
		unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)

	if r.spec.Isolation == contract.IsolationPod {
		if os.Geteuid() == 0 {
			// Root needs no user namespace for its seal, so the fallback
			// could only ever weaken a root runner's sessions.
			return 1, errors.New("spec: isolation pod: refused for a runner started as root; it is for a pod's runner, which runs as the session's owner")
		}
		// The workload may end up beside us with our uid and no PID
		// namespace between: an undumpable runner's /proc/PID/{environ,
		// mem} (the ticket key and registration token it was started
		// with) are closed to it even where Landlock is not.
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			return 1, fmt.Errorf("make the runner undumpable: %w", err)
		}
	}
	st := &setup{}
	defer r.removeAll()
	defer st.closeListeners()
	defer func() {
		if st.janitor != nil {
			// Our own clean-up first; only then may the janitor go
			// without doing its own.
			r.removeAll()
			st.janitor.done()
		}
	}()
	if err := r.setup(ctx, st); err != nil {
		return 1, err
	}

	// Tunnels through a kiosk's egress proxy end with the session.
	tunnels, endTunnels := context.WithCancel(context.WithoutCancel(ctx))
	defer endTunnels()
	s, err := seal.Start(ctx, r.sealConfig(tunnels, st))
	if err != nil {
		return 1, err
	}
	// The connectors hold the listeners now; without our copies, a dead
	// connector means "connection refused", not a silent queue.
	st.closeListeners()
	st.janitor.watch(s.Pid())
	mode, why := s.IDMap()
	if u := s.Unsealed(); u != "" {
		r.log.WarnContext(ctx, u, "pid", s.Pid(), "id_map", mode)
	} else {
		r.log.InfoContext(ctx, "seal started", "pid", s.Pid(), "id_map", mode, "why", why)
	}
	return r.supervise(ctx, s, st, sigs), nil
}

// setup is what the runner makes outside the seal before starting it.
type setup struct {
	owner   seal.Owner
	secrets map[string]ConnectorSecrets
	certSHA string
	scratch string
	accel   string // a VM's: kvm or tcg
	// listeners are bound in the host's network namespace, one per
	// connector, in the spec's order; endpoints are their addresses.
	listeners []*os.File
	endpoints map[string]string
	janitor   *janitor
	kiosk     *kioskSetup // a kiosk's policy directory and egress proxy
}

func (st *setup) closeListeners() {
	for _, f := range st.listeners {
		f.Close()
	}
	st.listeners = nil
}

// setup resolves the owner, reads the secrets, makes the scratch
// directory (and a VM's disk), binds the listeners and starts the janitor
// that cleans up should the runner be killed.
func (r *run) setup(ctx context.Context, st *setup) error {
	var err error
	if st.owner, err = seal.LookupOwner(r.spec.Owner); err != nil {
		return err
	}
	if st.secrets, st.certSHA, err = r.loadSecrets(); err != nil {
		return err
	}
	if st.scratch, err = r.makeScratch(st.owner); err != nil {
		return err
	}
	if err := r.writeSessionVNCPasswords(st.owner, st.scratch, st.secrets); err != nil {
		return err
	}
	if err := r.writeRDPLogon(st.owner, st.scratch); err != nil {
		return err
	}
	if r.spec.VM != nil {
		if st.accel, err = r.prepareVM(ctx, st.owner, st.scratch); err != nil {
			return err
		}
	}
	if r.spec.Kiosk != nil {
		if err := r.prepareKiosk(st); err != nil {
			return err
		}
	}
	if st.listeners, st.endpoints, err = r.bindListeners(st.owner); err != nil {
		return err
	}
	st.janitor, err = r.startJanitor()
	return err
}

// sealConfig is what the seal runs: the workload, the helper processes
// and one connector per listener, each with its secrets on a pipe, and
// the targets the session waits for before it is ready.
func (r *run) sealConfig(ctx context.Context, st *setup) seal.Config {
	spec := r.spec
	scfg := seal.Config{
		ID: spec.ID, Owner: st.owner, Listeners: st.listeners, ScratchDir: filepath.Join(st.scratch, "tmp"),
		Grace: time.Duration(spec.Grace), ReadyTimeout: time.Duration(spec.ReadyTimeout),
		Exe: r.cfg.Exe, Stderr: r.cfg.Stderr, Logger: r.log, Egress: map[int]string{},
		LogJSON: r.cfg.LogFormat == "json", UnixSockets: spec.UnixSockets, Hide: r.hidden(),
		// QEMU's SMB server (smbd) for a Windows guest's folder messages its
		// own processes over UNIX datagram sockets.
		UnixDatagram: spec.VM != nil && spec.VM.OS == "windows" && spec.VM.Share != nil,
		PodFallback:  spec.Isolation == contract.IsolationPod,
	}
	for _, e := range spec.Egress {
		_, port, _ := splitHostPort(e)
		scfg.Egress[port] = e
	}
	env := baseEnv(st.owner)
	scfg.Processes = append(scfg.Processes, processFor("workload", seal.Workload, spec.Workload, env, st.owner))
	for i, p := range spec.Processes {
		scfg.Processes = append(scfg.Processes, processFor(fmt.Sprintf("process-%d", i), seal.Helper, p, env, st.owner))
	}
	for i, c := range spec.Connectors {
		b, _ := json.Marshal(st.secrets[c.Name])
		scfg.Processes = append(scfg.Processes, seal.Process{
			Name: c.Name, Role: seal.Connector, Self: true, Argv: r.connectorArgv(c), Env: env, Dir: "/", Listener: i, Secret: b,
		})
		if c.WaitFor() {
			scfg.Probes = append(scfg.Probes, c.Target)
		}
	}
	if st.kiosk != nil {
		r.kioskSeal(ctx, &scfg, st.kiosk, env)
	}
	return scfg
}

// connectorArgv is how the runner starts connector c inside the seal: the
// airlock binary's connector command, its listener and secrets as
// inherited descriptors.
func (r *run) connectorArgv(c ConnectorSpec) []string {
	argv := []string{"connector", string(c.Kind), "--fd", strconv.Itoa(fdpass.First), "--secrets-fd", strconv.Itoa(fdpass.First + 1),
		"--name", c.Name, "--session", r.spec.ID, "--target", c.Target}
	if r.cfg.LogFormat != "" {
		argv = append(argv, "--log-format", r.cfg.LogFormat)
	}
	if c.Idle > 0 {
		argv = append(argv, "--idle", time.Duration(c.Idle).String())
	}
	if c.Clipboard != "" && c.Clipboard != contract.ClipboardBoth {
		// On the command line, not in the secrets: it is no secret, and
		// the workload can neither signal nor ptrace the connector to
		// change it.
		argv = append(argv, "--clipboard", string(c.Clipboard))
	}
	if c.CookiePath != "" {
		argv = append(argv, "--cookie-path", c.CookiePath)
	}
	return argv
}

// supervise reports ready, registers with the gateway when asked to, and
// ends the session on a signal, its lifetime, a failed registration or
// the seal's own end (whose exit code it returns), killing the seal if it
// overstays its grace.
func (r *run) supervise(ctx context.Context, s *seal.Seal, st *setup, sigs <-chan os.Signal) int {
	spec := r.spec
	mode, _ := s.IDMap()
	var lifetime <-chan time.Time
	if spec.Lifetime > 0 {
		t := time.NewTimer(time.Duration(spec.Lifetime))
		defer t.Stop()
		lifetime = t.C
	}
	var killAfter <-chan time.Time
	stopping := false
	stop := func(reason string) {
		if stopping {
			return
		}
		stopping = true
		r.log.Info("stopping", "reason", reason)
		s.Stop(reason)
		grace := cmp.Or(time.Duration(spec.Grace), 10*time.Second)
		killAfter = time.After(grace + 5*time.Second)
	}
	ctxDone, ready := ctx.Done(), s.Ready()
	regFailed := make(chan error, 1)
	regCtx, regCancel := context.WithCancel(ctx)
	defer regCancel()
	reportReady := func() {
		ready = nil
		warnings := s.Warnings()
		r.emit(Event{Kind: contract.EventReady, ID: spec.ID, Endpoints: st.endpoints, TLSSHA256: st.certSHA, IDMap: string(mode), Warnings: warnings, Accel: st.accel})
		r.log.Info("ready", "endpoints", st.endpoints)
		if r.cfg.Register != nil {
			go r.registerReady(regCtx, st.endpoints, st.certSHA, warnings, regFailed)
		}
	}
	for {
		select {
		case <-ready:
			reportReady()
		case err := <-regFailed:
			r.log.Error("registration failed", "error", err)
			stop("could not register with the gateway: " + err.Error())
		case <-s.Done():
			// A workload that ends at once can close Done in the same
			// instant as Ready, and select picks either: a seal that got
			// ready reports it before its exit, always.
			select {
			case <-ready:
				reportReady()
			default:
			}
			regCancel()
			res := s.Result()
			if spec.VM != nil {
				res.Reason = r.vmExitReason(res.Reason, res.Code, st.scratch)
			}
			r.removeAll()
			if st.kiosk != nil {
				st.kiosk.audit.finish()
			}
			c := res.Code
			r.emit(Event{Kind: contract.EventExit, ID: spec.ID, Reason: res.Reason, Code: c})
			r.log.Info("session ended", "reason", res.Reason, "code", c)
			r.registerExit(res.Reason, c)
			return c
		case sig := <-sigs:
			if stopping {
				r.log.Warn("second signal: killing the seal", "signal", sig.String())
				s.Kill()
				continue
			}
			stop("stopped by " + sigName(sig))
		case <-ctxDone:
			ctxDone = nil
			stop("stopped: " + context.Cause(ctx).Error())
		case <-lifetime:
			stop("lifetime of " + time.Duration(spec.Lifetime).String() + " is over")
		case <-killAfter:
			r.log.Warn("seal did not end within its grace period: killing it")
			s.Kill()
		}
	}
}

// hidden is every path the seal masks: the spec's list and the files the
// runner itself read secrets from. The connectors have those secrets
// already (through a pipe); the workload must not read them.
func (r *run) hidden() []string {
	spec := r.spec
	paths := slices.Clone(spec.Hide)
	add := func(p string) {
		if p != "" {
			if abs, err := filepath.Abs(p); err == nil {
				paths = append(paths, abs)
			}
		}
	}
	// Only secrets: a certificate or CA file may be one the workload
	// itself needs (a system bundle).
	add(spec.TicketKeyFile)
	if spec.TLS != nil {
		add(spec.TLS.KeyFile)
	}
	for _, c := range spec.Connectors {
		add(c.VNCPasswordFile)
	}
	if spec.VM != nil {
		add(spec.VM.RDPPasswordFile)
	}
	if spec.RDPLogon != nil {
		add(spec.RDPLogon.PasswordFile)
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

func sigName(s os.Signal) string {
	if ss, ok := s.(syscall.Signal); ok {
		return unix.SignalName(ss)
	}
	return s.String()
}

func baseEnv(o seal.Owner) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + o.Home,
		"USER=" + o.Name,
		"LOGNAME=" + o.Name,
		"XDG_RUNTIME_DIR=/run/user/" + strconv.Itoa(o.UID),
		"TMPDIR=/tmp",
	}
	if l := os.Getenv("LANG"); l != "" {
		env = append(env, "LANG="+l)
	}
	return env
}

func processFor(name string, role seal.Role, c Command, base []string, o seal.Owner) seal.Process {
	env := slices.Clone(base)
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, k+"="+c.Env[k])
	}
	return seal.Process{Name: name, Role: role, Argv: c.Argv, Env: env, Dir: cmp.Or(c.Dir, o.Home, "/"), Listener: -1}
}

// loadSecrets reads the key, certificate and passwords once, outside the
// seal (where /tmp is still the host's), for each connector.
func (r *run) loadSecrets() (map[string]ConnectorSecrets, string, error) {
	spec := r.spec
	var key string
	if spec.TicketKeyFile != "" {
		k, err := ticket.LoadKey(spec.TicketKeyFile)
		if err != nil {
			return nil, "", err
		}
		key = hex.EncodeToString(k[:])
	}
	if spec.TicketKeyEnv != "" {
		v := os.Getenv(spec.TicketKeyEnv)
		os.Unsetenv(spec.TicketKeyEnv)
		k, err := ticket.ParseKey([]byte(v))
		if err != nil {
			return nil, "", fmt.Errorf("ticket key from $%s: %w", spec.TicketKeyEnv, err)
		}
		key = hex.EncodeToString(k[:])
	}
	var certPEM, keyPEM, caPEM []byte
	var err error
	if spec.TLS != nil && spec.TLS.CertFile != "" {
		if certPEM, err = os.ReadFile(spec.TLS.CertFile); err != nil {
			return nil, "", fmt.Errorf("tls.cert_file: %w", err)
		}
		if keyPEM, err = os.ReadFile(spec.TLS.KeyFile); err != nil {
			return nil, "", fmt.Errorf("tls.key_file: %w", err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return nil, "", fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
	}
	if spec.TLS != nil && spec.TLS.ClientCAFile != "" {
		if caPEM, err = os.ReadFile(spec.TLS.ClientCAFile); err != nil {
			return nil, "", fmt.Errorf("tls.client_ca_file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
			return nil, "", fmt.Errorf("tls.client_ca_file %s: no PEM certificate in it", spec.TLS.ClientCAFile)
		}
	}
	if spec.TLS != nil && spec.TLS.ClientCAPEM != "" {
		caPEM = []byte(spec.TLS.ClientCAPEM)
		if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
			return nil, "", errors.New("tls.client_ca_pem: no PEM certificate in it")
		}
	}
	needTLS := false
	var ips []net.IP
	for _, c := range spec.Connectors {
		if k, _ := contract.Lookup(c.Kind); k.PlainTCP {
			continue
		}
		if h, ok := strings.CutPrefix(c.Listen, "tcp:"); ok {
			needTLS = true
			host, _, _ := net.SplitHostPort(h)
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	if needTLS && certPEM == nil {
		if certPEM, keyPEM, _, err = selfSigned(spec.ID, ips, time.Duration(spec.Lifetime)); err != nil {
			return nil, "", err
		}
	}
	out := map[string]ConnectorSecrets{}
	for _, c := range spec.Connectors {
		// Each connector gets what its kind needs (contract.KindInfo), and
		// no more: a tls connector never holds the ticket key.
		kind, _ := contract.Lookup(c.Kind)
		var s ConnectorSecrets
		if kind.Tickets {
			s.TicketKey = key
		}
		// A tls connector speaks TLS on any listener, a UNIX socket too; a
		// plain-TCP kind (rnode) never does.
		if strings.HasPrefix(c.Listen, "tcp:") && !kind.PlainTCP || kind.ClientCerts {
			s.CertPEM, s.KeyPEM = string(certPEM), string(keyPEM)
		}
		if kind.ClientCerts {
			s.ClientCAPEM = string(caPEM)
		}
		if c.VNCPasswordFile != "" {
			b, err := os.ReadFile(c.VNCPasswordFile)
			if err != nil {
				return nil, "", fmt.Errorf("connector %s: vnc_password_file: %w", c.Name, err)
			}
			s.VNCPassword = strings.TrimRight(string(b), "\r\n")
		}
		if c.SecretEnv != "" {
			// Read once and unset, like ticket_key_env: nothing the seal
			// starts inherits it.
			v := os.Getenv(c.SecretEnv)
			os.Unsetenv(c.SecretEnv)
			if len(v) < contract.MinSecretLen {
				return nil, "", fmt.Errorf("connector %s: secret_env $%s: %d characters, want at least %d", c.Name, c.SecretEnv, len(v), contract.MinSecretLen)
			}
			s.Secret = v
		}
		if c.SessionVNCPasswordFile != "" {
			if s.VNCPassword, err = newVNCPassword(); err != nil {
				return nil, "", fmt.Errorf("connector %s: %w", c.Name, err)
			}
		}
		out[c.Name] = s
	}
	sha := ""
	if certPEM != nil {
		sha = certSHA256(certPEM)
	}
	return out, sha, nil
}

// makeScratch creates the session's host directory: DIR/ID (0700) with
// tmp (1777) inside, which becomes /tmp in the seal. DIR is one no other
// user can have made or can swap (see scratchParent); without one, it is
// a fresh directory with a random name in $TMPDIR.
func (r *run) makeScratch(o seal.Owner) (string, error) {
	dir, made := r.spec.ScratchDir, false
	if dir == "" {
		parent, err := scratchParent()
		if err != nil {
			return "", err
		}
		if parent != "" {
			dir = filepath.Join(parent, r.spec.ID)
		} else {
			if dir, err = os.MkdirTemp("", "airlock-"+r.spec.ID+"-"); err != nil {
				return "", fmt.Errorf("make scratch dir: %w", err)
			}
			made = true
			if err := checkPrivateDir(dir, false); err != nil {
				os.Remove(dir)
				return "", fmt.Errorf("scratch dir: %w", err)
			}
		}
	}
	if !made {
		if err := os.Mkdir(dir, 0o700); err != nil {
			if errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("scratch dir %s exists: is session %s already running here?", dir, r.spec.ID)
			}
			return "", fmt.Errorf("make scratch dir: %w", err)
		}
	}
	r.cleanup = append(r.cleanup, dir)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("make scratch dir: %w", err)
	}
	// X servers started as a user will not make these themselves, and
	// without them an X client cannot find the display.
	for _, d := range []string{tmp, filepath.Join(tmp, ".X11-unix"), filepath.Join(tmp, ".ICE-unix")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("make scratch dir: %w", err)
		}
		if err := os.Chmod(d, os.ModeSticky|0o777); err != nil {
			return "", fmt.Errorf("make scratch dir: %w", err)
		}
	}
	return dir, nil
}

// bindListeners binds every connector's listen address here, in the host
// network namespace, before the seal exists.
func (r *run) bindListeners(owner seal.Owner) ([]*os.File, map[string]string, error) {
	var files []*os.File
	endpoints := map[string]string{}
	fail := func(err error) ([]*os.File, map[string]string, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, err
	}
	for _, c := range r.spec.Connectors {
		if p, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
			if err := r.prepareUnixPath(p, owner.UID); err != nil {
				return fail(fmt.Errorf("connector %s: %w", c.Name, err))
			}
		}
		ln, addr, err := fdpass.Listen(c.Listen)
		if err != nil {
			return fail(fmt.Errorf("connector %s: %w", c.Name, err))
		}
		if p, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
			r.cleanup = append(r.cleanup, p)
			os.Chmod(p, 0o600)
		}
		f, err := fdpass.File(ln)
		ln.Close()
		if err != nil {
			return fail(fmt.Errorf("connector %s: %w", c.Name, err))
		}
		files = append(files, f)
		endpoints[c.Name] = addr
	}
	return files, endpoints, nil
}

// prepareUnixPath makes the socket's directory (0700, removed at the end if
// we made it) and clears a stale socket left by a crashed run.
func (r *run) prepareUnixPath(p string, owner int) error {
	dir := filepath.Dir(p)
	var made []string
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make socket directory %s: %w", dir, err)
	}
	for i := len(made) - 1; i >= 0; i-- {
		r.cleanup = append(r.cleanup, made[i])
	}
	if err := checkSocketDir(dir, owner); err != nil {
		return fmt.Errorf("listen unix:%s: %w", p, err)
	}
	if st, err := os.Lstat(p); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("listen unix:%s: exists and is not a socket", p)
		}
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("listen unix:%s: another process is listening there", p)
		}
		os.Remove(p)
	}
	return nil
}

func (r *run) removeAll() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		if err := os.RemoveAll(r.cleanup[i]); err != nil {
			r.log.Warn("clean up", "path", r.cleanup[i], "error", err)
		}
	}
	r.cleanup = nil
}
