package seal

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/seal/fdpass"
	"golang.org/x/sys/unix"
)

// InitRole is the hidden subcommand that runs init inside the seal.
const InitRole = "seal-init"

const (
	ctlFD       = 3
	egressFD    = 4
	firstListFD = 5
)

// RunInit is init's whole life inside the seal. It returns the exit code.
func RunInit() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "seal-init")
	// Nothing init inherited may reach the processes it starts: the control
	// and egress sockets would let a workload fake "ready" or ask for egress.
	closeOnExecAbove(2)

	ctlFile := os.NewFile(ctlFD, "ctl")
	c, err := net.FileConn(ctlFile)
	ctlFile.Close()
	if err != nil {
		log.Error("control socket", "error", err)
		return 1
	}
	ctl := c.(*net.UnixConn)
	msg, err := newMsgReader(ctl).read()
	if err != nil || msg.Type != "plan" || msg.Plan == nil {
		log.Error("no plan from the runner", "error", err)
		return 1
	}
	if msg.Plan.LogJSON {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "seal-init")
	}
	in := &initProc{log: log.With("session", msg.Plan.ID), plan: msg.Plan, ctl: ctl, procs: map[int]*child{}}
	return in.run()
}

type child struct {
	p   Process
	pid int
}

type initProc struct {
	log      *slog.Logger
	plan     *Plan
	ctl      *net.UnixConn
	ctlMu    sync.Mutex
	warnings []string

	mu    sync.Mutex
	procs map[int]*child

	// connSp starts the connectors, workSp the workload and helpers.
	connSp, workSp *spawner
	// output is the pipe the workload and helpers write to, connOutput
	// the connectors' (output.go): apart, so that a workload that uses up
	// its budget does not silence the connectors' logs.
	output, connOutput *outputRelay

	egress   *net.UnixConn
	egressID atomic.Uint64
	waitersM sync.Mutex
	waiters  map[uint64]chan egressResult
	// egressDone is closed when the runner's egress replies end (it is
	// gone): nobody waits for an answer that cannot come.
	egressDone chan struct{}
	// egressWait bounds the wait for one egress answer.
	egressWait time.Duration
}

// egressWait is how long init waits for the runner to answer an egress
// request: well past the runner's 10 s dial timeout.
const egressWait = 30 * time.Second

// send tells the runner m. A failure is logged here and returned: the
// runner is gone or its socket broken, and a caller that must not carry on
// without it can stop.
func (in *initProc) send(m Message) error {
	in.ctlMu.Lock()
	defer in.ctlMu.Unlock()
	if err := writeMsg(in.ctl, m); err != nil {
		in.log.Error("tell the runner", "message", m.Type, "reason", m.Reason, "error", err)
		return fmt.Errorf("send %s to the runner: %w", m.Type, err)
	}
	return nil
}

func (in *initProc) fail(format string, args ...any) int {
	reason := fmt.Sprintf(format, args...)
	in.log.Error("seal setup failed", "reason", reason)
	// A failure to say so is logged by send; init's exit code still
	// tells the runner it failed.
	_ = in.send(Message{Type: "error", Reason: reason, Code: 1})
	return 1
}

func (in *initProc) run() int {
	p := in.plan
	if p.Unsealed {
		if err := in.setupUnsealed(); err != nil {
			return in.fail("%v", err)
		}
	} else {
		if err := in.setupMounts(); err != nil {
			return in.fail("%v", err)
		}
		in.setupIPCUTS()
		if err := loopbackUp(); err != nil {
			return in.fail("bring lo up: %v", err)
		}
		// Inside its own network namespace the workload may bind any port (an
		// RDP server on 3389 is fine, so is one on 443): nothing is reachable.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0); err != nil {
			in.warn("allow low ports inside: %v", err)
		}
	}
	if err := in.startEgress(); err != nil {
		return in.fail("%v", err)
	}
	var err error
	if in.output, err = startOutputRelay(os.Stderr, maxProcessOutput, in.log.With("of", "workload")); err != nil {
		return in.fail("%v", err)
	}
	if in.connOutput, err = startOutputRelay(os.Stderr, maxProcessOutput, in.log.With("of", "connectors")); err != nil {
		return in.fail("%v", err)
	}
	// Every process is started from one of two spawner threads whose
	// credentials are made right first (spawner.go): connectors from one
	// with no capabilities and no_new_privs, the workload and its helpers
	// from one that is also in a Landlock domain that keeps them away from
	// init and the connectors (workload.go). Init's other threads keep
	// what they have (in an unprivileged session, capabilities over the
	// seal's own namespaces only); nothing is ever forked from them.
	var ws, more []string
	if in.connSp, ws, err = newSpawner("connector", in.setupConnectorThread); err != nil {
		return in.fail("%v", err)
	}
	if in.workSp, more, err = newSpawner("workload", in.setupWorkloadThread); err != nil {
		return in.fail("%v", err)
	}
	for _, w := range append(ws, more...) {
		in.warn("%s", w)
	}
	// An undumpable process can be ptraced, and its /proc/PID/{mem,environ,fd}
	// read, only with CAP_SYS_PTRACE: defence for kernels without Landlock
	// scoping, where the workload (the same uid, unprivileged) is not kept
	// out by its domain.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)

	// The connectors start now, then the workload; helpers (an xterm
	// needs the X server) once the probes pass. The workload comes last so
	// that no connector is ever dumpable while the workload runs: Landlock
	// keeps it out anyway, but the fd numbers in /proc/PID/fd are guarded
	// by ownership alone, and without Landlock everything is.
	var conns []int
	for _, role := range []Role{Connector, Workload} {
		for _, proc := range p.Processes {
			if proc.Role != role {
				continue
			}
			pid, err := in.start(proc)
			if err != nil {
				in.terminate(fmt.Sprintf("start %s %q: %v", proc.Role, proc.Name, err), 1, sigs)
			}
			if role == Connector {
				conns = append(conns, pid)
			}
		}
		if role == Connector {
			in.waitUndumpable(conns, 10*time.Second)
		}
	}

	stopCh := make(chan Message, 1)
	go func() {
		r := newMsgReader(in.ctl)
		for {
			m, err := r.read()
			if err != nil {
				// The runner is gone; Pdeathsig will kill us if it died, but
				// a closed socket alone also means nobody supervises us.
				stopCh <- Message{Type: "stop", Reason: "runner closed the control socket"}
				return
			}
			if m.Type == "stop" {
				stopCh <- m
				return
			}
		}
	}()

	readyCh := make(chan error, 1)
	ctx, cancelProbe := context.WithTimeout(context.Background(), p.ReadyTimeout)
	defer cancelProbe()
	go func() { readyCh <- waitProbes(ctx, p.Probes) }()

	for {
		select {
		case err := <-readyCh:
			if err != nil {
				in.terminate(err.Error(), 1, sigs)
			}
			for _, proc := range p.Processes {
				if proc.Role != Helper {
					continue
				}
				if _, err := in.start(proc); err != nil {
					if proc.Essential {
						in.terminate(fmt.Sprintf("start %s: %v", proc.Name, err), 1, sigs)
					}
					// Other helpers are not essential: say so and carry on.
					in.warn("start %s: %v", proc.Name, err)
				}
			}
			if err := in.send(Message{Type: "ready", Warnings: in.warnings}); err != nil {
				// A session nobody can learn is ready is no use to anyone.
				in.terminate("the runner could not be told the session is ready", 1, sigs)
			}
			in.log.Info("ready")
		case m := <-stopCh:
			in.terminate(cmp.Or(m.Reason, "stopped"), 0, sigs)
		case sig := <-sigs:
			switch sig {
			case unix.SIGCHLD:
				for _, ex := range in.reap() {
					if ex.p.Role == Helper && !ex.p.Essential {
						in.log.Info("process exited", "name", ex.p.Name, "code", ex.code)
						continue
					}
					reason := fmt.Sprintf("%s %s exited with code %d", ex.p.Role, ex.p.Name, ex.code)
					code := ex.code
					if ex.p.Role == Connector && code == 0 {
						code = 1
					}
					in.terminate(reason, code, sigs)
				}
			default:
				in.terminate("init got "+sig.String(), 0, sigs)
			}
		}
	}
}

func (in *initProc) warn(format string, args ...any) {
	w := fmt.Sprintf(format, args...)
	in.log.Warn(w)
	in.warnings = append(in.warnings, w)
}

type exited struct {
	p    Process
	code int
}

// reap collects every exited child, ours or orphans re-parented to us.
func (in *initProc) reap() []exited {
	var out []exited
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return out
		}
		in.mu.Lock()
		c := in.procs[pid]
		delete(in.procs, pid)
		in.mu.Unlock()
		if c == nil {
			continue
		}
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		out = append(out, exited{c.p, code})
	}
}

// terminate ends the session: it tells the runner why, signals everything
// in the PID namespace, waits up to the grace period, kills what is left,
// and exits. It never returns.
func (in *initProc) terminate(reason string, code int, sigs chan os.Signal) {
	in.log.Info("ending session", "reason", reason)
	// Logged by send if it fails; the session ends all the same, and the
	// exit code carries code.
	_ = in.send(Message{Type: "exit", Reason: reason, Code: code})
	in.signalAll(unix.SIGTERM)
	deadline := time.NewTimer(in.plan.Grace)
	defer deadline.Stop()
	for {
		in.reap()
		if noChildren() {
			in.output.finish(time.Second)
			in.connOutput.finish(time.Second)
			os.Exit(clampCode(code))
		}
		select {
		case <-sigs:
		case <-deadline.C:
			in.log.Warn("grace period over: killing what is left")
			in.signalAll(unix.SIGKILL)
			// Our exit kills the rest anyway; reaping first keeps the
			// runner's view ("nothing left") true when it sees us gone.
			waitUntil := time.Now().Add(2 * time.Second)
			for !noChildren() && time.Now().Before(waitUntil) {
				if in.plan.Unsealed {
					// Without a PID namespace our exit kills nothing:
					// whatever forked since the last pass goes now.
					in.signalAll(unix.SIGKILL)
				}
				in.reap()
				time.Sleep(10 * time.Millisecond)
			}
			in.output.finish(100 * time.Millisecond)
			in.connOutput.finish(100 * time.Millisecond)
			os.Exit(clampCode(code))
		case <-time.After(100 * time.Millisecond):
			// SIGCHLD can coalesce; poll as a backstop.
			if in.plan.Unsealed {
				// A process forked after the first SIGTERM gets one too.
				in.signalAll(unix.SIGTERM)
			}
		}
	}
}

func clampCode(c int) int {
	if c < 0 || c > 255 {
		return 1
	}
	return c
}

// noChildren reports whether any process other than init is left.
func noChildren() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return errors.Is(err, unix.ECHILD)
}

func (in *initProc) start(p Process) (int, error) {
	path := "/proc/self/exe"
	argv := append([]string{"airlock"}, p.Argv...)
	if !p.Self {
		var err error
		if path, err = lookPath(p.Argv[0], p.Env); err != nil {
			return 0, err
		}
		argv = p.Argv
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	out := in.output
	if p.Role == Connector {
		out = in.connOutput
	}
	files := []uintptr{devnull.Fd(), out.w.Fd(), out.w.Fd()}
	if p.Listener >= 0 {
		files = append(files, uintptr(firstListFD+p.Listener))
	}
	var secretW *os.File
	if p.Secret != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		defer r.Close()
		secretW = w
		files = append(files, r.Fd())
	}
	attr := &syscall.ProcAttr{
		Dir:   p.Dir,
		Env:   p.Env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	if in.plan.Unsealed {
		// No PID namespace ends the session with init: should init be
		// killed (with the runner, by Pdeathsig), what it started goes
		// too. The spawner's thread lives as long as init.
		attr.Sys.Pdeathsig = syscall.SIGKILL
	}
	if in.plan.RootMode {
		groups := make([]uint32, len(in.plan.Groups))
		for i, g := range in.plan.Groups {
			groups[i] = uint32(g)
		}
		attr.Sys.Credential = &syscall.Credential{Uid: uint32(in.plan.UID), Gid: uint32(in.plan.GID), Groups: groups}
	}
	sp := in.workSp
	if p.Role == Connector {
		sp = in.connSp
	}
	// Holding mu until the pid is recorded: reap must not see the child
	// exit before it knows whose it is.
	in.mu.Lock()
	pid, err := sp.forkExec(path, argv, attr)
	if err == nil {
		in.procs[pid] = &child{p: p, pid: pid}
	}
	in.mu.Unlock()
	if err != nil {
		if secretW != nil {
			secretW.Close()
		}
		return 0, fmt.Errorf("exec %s: %w", argv[0], err)
	}
	if secretW != nil {
		go func() {
			secretW.Write(p.Secret)
			secretW.Close()
		}()
	}
	in.log.Info("started", "role", p.Role, "name", p.Name, "pid", pid)
	return pid, nil
}

// waitUndumpable waits until each connector has made itself not dumpable
// (the first thing "airlock connector" does), which shows as its
// /proc/PID/environ no longer belonging to the owner (the directory itself
// always does), or has ended.
func (in *initProc) waitUndumpable(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid)
		for {
			var st unix.Stat_t
			if err := unix.Stat(dir+"/environ", &st); err != nil || int(st.Uid) != in.plan.UID || isZombie(dir) {
				break
			}
			if time.Now().After(deadline) {
				in.warn("connector pid %d still dumpable after %s: the workload starts anyway", pid, timeout)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func isZombie(procDir string) bool {
	b, err := os.ReadFile(procDir + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", file, path)
}

func closeOnExecAbove(n int) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > n {
			unix.CloseOnExec(fd)
		}
	}
}

// waitProbes returns once every address accepts a connection.
func waitProbes(ctx context.Context, addrs []string) error {
	for _, a := range addrs {
		network, addr := "tcp", a
		if p, ok := strings.CutPrefix(a, "unix:"); ok {
			network, addr = "unix", p
		}
		var last error
		for {
			d := net.Dialer{Timeout: 500 * time.Millisecond}
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.Close()
				break
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("target %s did not accept connections in time: %v", a, last)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

type egressResult struct {
	conn net.Conn
	err  error
}

// startEgress listens on 127.0.0.1:PORT inside the seal for each egress
// exception and has the runner dial the real target outside.
func (in *initProc) startEgress() error {
	if len(in.plan.EgressPorts) == 0 {
		return nil
	}
	f := os.NewFile(egressFD, "egress")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("egress socket: %w", err)
	}
	in.egress = c.(*net.UnixConn)
	in.waiters = map[uint64]chan egressResult{}
	in.egressDone = make(chan struct{})
	in.egressWait = egressWait
	go in.readEgressReplies()
	for _, port := range in.plan.EgressPorts {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("egress listener on port %d: %w", port, err)
		}
		go in.serveEgressPort(ln, port)
	}
	return nil
}

func (in *initProc) readEgressReplies() {
	defer close(in.egressDone)
	buf := make([]byte, 1024)
	for {
		n, conn, err := fdpass.RecvMsg(in.egress, buf)
		if err != nil && n == 0 {
			return
		}
		var rep EgressReply
		if jerr := json.Unmarshal(buf[:n], &rep); jerr != nil {
			if conn != nil {
				conn.Close()
			}
			continue
		}
		res := egressResult{conn: conn}
		if rep.Error != "" {
			res.err = errors.New(rep.Error)
		} else if conn == nil {
			res.err = cmp.Or(err, errors.New("no connection passed"))
		}
		in.waitersM.Lock()
		ch := in.waiters[rep.ID]
		delete(in.waiters, rep.ID)
		in.waitersM.Unlock()
		if ch == nil {
			if conn != nil {
				conn.Close()
			}
			continue
		}
		ch <- res
	}
}

func (in *initProc) serveEgressPort(ln net.Listener, port int) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go in.egressConn(c, port)
	}
}

// egressConn asks the runner for a connection to port's target and
// relays c to it. It waits at most egressWait, and not at all once the
// runner is gone; either way its waiter entry goes.
func (in *initProc) egressConn(c net.Conn, port int) {
	id := in.egressID.Add(1)
	ch := make(chan egressResult, 1)
	in.waitersM.Lock()
	in.waiters[id] = ch
	in.waitersM.Unlock()
	// forget removes the entry, and reports false when the reply reader
	// took it first: its answer is then on its way into ch.
	forget := func() bool {
		in.waitersM.Lock()
		defer in.waitersM.Unlock()
		_, ok := in.waiters[id]
		delete(in.waiters, id)
		return ok
	}
	giveUp := func(why string, err error) {
		in.log.Warn("egress: "+why, "port", port, "error", err)
		if !forget() {
			if res := <-ch; res.conn != nil {
				res.conn.Close()
			}
		}
		c.Close()
	}
	b, _ := json.Marshal(EgressRequest{ID: id, Port: port})
	if _, _, err := in.egress.WriteMsgUnix(b, nil, nil); err != nil {
		giveUp("ask the runner", err)
		return
	}
	t := time.NewTimer(in.egressWait)
	defer t.Stop()
	var res egressResult
	select {
	case res = <-ch:
	case <-t.C:
		giveUp("no answer from the runner", fmt.Errorf("none within %s", in.egressWait))
		return
	case <-in.egressDone:
		// The reader has ended: an answer it took is in ch already.
		select {
		case res = <-ch:
		default:
			giveUp("no answer from the runner", errors.New("the runner's egress socket closed"))
			return
		}
	}
	if res.err != nil {
		in.log.Warn("egress refused", "port", port, "error", res.err)
		c.Close()
		return
	}
	relay.Pipe(context.Background(), c, res.conn, 0)
}
