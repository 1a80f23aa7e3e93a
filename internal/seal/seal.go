package seal

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/seal/fdpass"
	"golang.org/x/sys/unix"
)

// Owner is the account a session belongs to.
type Owner struct {
	Name   string
	UID    int
	GID    int
	Groups []int // supplementary groups, used in root mode
	Home   string
}

// LookupOwner resolves an account name. An empty name means the user
// running airlock.
func LookupOwner(name string) (Owner, error) {
	var u *user.User
	var err error
	if name == "" {
		u, err = user.LookupId(strconv.Itoa(os.Getuid()))
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return Owner{}, fmt.Errorf("look up owner %q: %w", name, err)
	}
	o := Owner{Name: u.Username, Home: u.HomeDir}
	o.UID, _ = strconv.Atoi(u.Uid)
	o.GID, _ = strconv.Atoi(u.Gid)
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				o.Groups = append(o.Groups, n)
			}
		}
	}
	return o, nil
}

// Config says what to seal.
type Config struct {
	ID    string
	Owner Owner
	// Listeners are passed in, in order, and named by Process.Listener. The
	// caller keeps ownership and may close them once Start returns.
	Listeners []*os.File
	Processes []Process
	// Probes are addresses ("127.0.0.1:5901", "unix:/tmp/x.sock") inside the
	// seal that must accept a connection before the seal counts as ready.
	Probes []string
	// Egress maps a port on 127.0.0.1 inside the seal to a host:port the
	// parent dials outside for each connection. Nothing else gets out.
	Egress map[int]string
	// EgressLocal maps a port on 127.0.0.1 inside the seal to a function
	// that makes the connection outside, for a service the runner itself
	// provides (a kiosk's egress proxy, served on one end of a socket
	// pair): nothing listens on the host for it. The connection must be
	// a TCP or UNIX socket, which is passed into the seal.
	EgressLocal map[int]func(context.Context) (net.Conn, error)
	// Binds are host directories mounted read-only inside the seal over
	// existing directories (a kiosk's browser policies over
	// /etc/chromium), before Hide is applied.
	Binds []Bind
	// UnixSockets are host pathname UNIX sockets (absolute paths) the
	// workload may connect to. Any other host pathname socket is refused:
	// only sockets on the seal's own /tmp, /run, /var/tmp and /dev/shm are
	// reachable (see unixguard.go).
	UnixSockets []string
	// UnixDatagram lets the workload make UNIX datagram sockets, which the
	// unix guard otherwise refuses: a datagram names its destination in
	// every send, in memory the workload can rewrite after any check, so
	// with them a send to a host socket's path is not refused. Only for a
	// workload that cannot work without (Samba's smbd, which QEMU starts
	// for a Windows guest's shared folder); `ready` carries a warning.
	UnixDatagram bool
	// ScratchDir is a host directory, owned by the owner, mounted on /tmp
	// inside. The caller creates and removes it.
	ScratchDir string
	// Hide lists host paths (absolute) the workload must not see: inside,
	// each directory is empty and each file is empty, both read-only. The
	// gateway's secrets go here. A path that does not exist is skipped.
	Hide []string
	// Grace is how long processes get between SIGTERM and SIGKILL. Default 10s.
	Grace time.Duration
	// ReadyTimeout bounds the wait for Probes. Default 60s.
	ReadyTimeout time.Duration
	// Exe is the airlock binary to re-execute. Default /proc/self/exe.
	Exe string
	// LogJSON makes init log JSON lines instead of text.
	LogJSON bool
	// Stderr receives init's and the processes' output. Default os.Stderr.
	Stderr io.Writer
	Logger *slog.Logger
	// PodFallback lets Start run init without any namespace when the user
	// namespace cannot be made because something above us forbids it
	// (EPERM, ENOSPC or EINVAL from clone: a seccomp profile, a zero
	// user.max_user_namespaces, kernel.unprivileged_userns_clone = 0).
	// Only a runner in a Kubernetes pod asks for it (spec isolation
	// "pod"), where the pod's network namespace and NetworkPolicy stand
	// in; Unsealed then says why. Ignored for a root runner, which needs
	// no user namespace. Without it such a failure is Start's error.
	PodFallback bool
}

// Result is how a seal ended.
type Result struct {
	Reason string
	Code   int
}

// Seal is a running sealed unit. Its methods are safe for concurrent use.
type Seal struct {
	log *slog.Logger
	cfg Config
	ctl *net.UnixConn
	// ctlRead is closed when readControl has read init's last message.
	ctlRead chan struct{}
	egress  *net.UnixConn
	pid     int
	// pidfd is init's pidfd until finish closes it, and reaped says init
	// was waited for: both under mu, so that a late Kill neither signals a
	// closed (perhaps reused) descriptor nor kill(2)s a recycled pid.
	pidfd   int
	reaped  bool
	mapMode IDMapMode
	mapWhy  string
	// unsealed is why init runs without namespaces (PodFallback), or "".
	unsealed string

	ready    chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	result   Result
	warnings []string
	stopOnce sync.Once
}

// Start creates the namespaces, starts init in them and sends it the plan.
// It returns once init is running; Ready is closed when every probe
// accepts, Done when init has exited. ctx bounds only the start-up.
func Start(ctx context.Context, cfg Config) (*Seal, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Grace = cmp.Or(cfg.Grace, 10*time.Second)
	cfg.ReadyTimeout = cmp.Or(cfg.ReadyTimeout, 60*time.Second)
	cfg.Exe = cmp.Or(cfg.Exe, "/proc/self/exe")
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	s := &Seal{
		log:     cmp.Or(cfg.Logger, slog.Default()).With("component", "seal", "session", cfg.ID),
		cfg:     cfg,
		ready:   make(chan struct{}),
		ctlRead: make(chan struct{}),
		done:    make(chan struct{}),
		pidfd:   -1,
	}
	root := os.Geteuid() == 0

	ctlParent, ctlChild, err := socketpair(unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	defer ctlChild.Close()
	egParent, egChild, err := socketpair(unix.SOCK_SEQPACKET)
	if err != nil {
		ctlParent.Close()
		return nil, err
	}
	defer egChild.Close()
	s.ctl, s.egress = ctlParent, egParent

	// The session id is only there for ps: an admin can tell which init
	// is which session's.
	pidfd := -1
	newCmd := func(cgroupNS, unsealed bool) *exec.Cmd {
		cmd := exec.Command(cfg.Exe, InitRole, cfg.ID)
		cmd.Args[0] = "airlock-init"
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
		cmd.Stdout, cmd.Stderr = cfg.Stderr, cfg.Stderr
		cmd.ExtraFiles = append([]*os.File{ctlChild, egChild}, cfg.Listeners...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			// IPC and UTS: no host SysV or POSIX IPC objects inside, and a
			// host name of the seal's own.
			Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
				syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
			// If the runner dies, even by SIGKILL, init dies and the kernel then
			// kills everything in its PID namespace.
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pidfd,
		}
		if unsealed {
			// No namespace at all (PodFallback): init is the owner
			// already, in the pod's namespaces. Its own process group, so
			// a signal for the runner's group does not reach the session.
			cmd.SysProcAttr.Cloneflags = 0
			cmd.SysProcAttr.Setpgid = true
			return cmd
		}
		if cgroupNS {
			// The workload sees its own cgroup as "/", not where the node
			// put the runner.
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWCGROUP
		}
		if !root {
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
			// Init starts unmapped; ambient capabilities survive its exec so it
			// can mount and bring lo up once the parent has written its maps.
			// The threads it starts processes from drop them all first.
			cmd.SysProcAttr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP}
		}
		return cmd
	}

	// Pdeathsig fires when the thread that started the child exits, not the
	// process (golang/go#27505), so start and wait on one locked thread.
	started := make(chan error, 1)
	var cmd *exec.Cmd
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd = newCmd(true, false)
		err := cmd.Start()
		if errors.Is(err, syscall.EINVAL) {
			// A kernel without cgroup namespaces: the rest still holds.
			cmd = newCmd(false, false)
			if err = cmd.Start(); err == nil {
				s.mu.Lock()
				s.warnings = append(s.warnings, "no cgroup namespace on this kernel: the workload sees the node's cgroup paths")
				s.mu.Unlock()
			}
		}
		if errno, ok := userNSForbidden(err); ok && cfg.PodFallback && !root {
			why := UnsealedWarning(errno)
			cmd = newCmd(false, true)
			if err = cmd.Start(); err == nil {
				s.mu.Lock()
				s.unsealed = why
				s.warnings = append(s.warnings, why)
				s.mu.Unlock()
			}
		}
		if err != nil {
			started <- fmt.Errorf("start seal init %s: %w", cfg.Exe, err)
			return
		}
		s.mu.Lock()
		s.pidfd = pidfd
		s.mu.Unlock()
		s.pid = cmd.Process.Pid // read after started, which orders it
		started <- nil
		werr := cmd.Wait()
		// init's own account of the end (the workload's exit code) is on
		// the control socket and may still be unread when Wait returns:
		// read it first, or the reason becomes "seal init ended". A
		// descendant that kept the socket open must not hold the end up.
		select {
		case <-s.ctlRead:
		case <-time.After(2 * time.Second):
		}
		s.finish(werr)
	}()
	if err := <-started; err != nil {
		s.ctl.Close()
		s.egress.Close()
		return nil, err
	}

	plan := Plan{
		ID: cfg.ID, RootMode: root, Unsealed: s.unsealed != "", UID: cfg.Owner.UID, GID: cfg.Owner.GID,
		ScratchDir: cfg.ScratchDir, Hide: cfg.Hide, Processes: cfg.Processes, Probes: cfg.Probes,
		ReadyTimeout: cfg.ReadyTimeout, Grace: cfg.Grace, TTYGID: -1, LogJSON: cfg.LogJSON,
		UnixSockets: cfg.UnixSockets, UnixDatagram: cfg.UnixDatagram,
	}
	ttyGID := -1
	if g, err := user.LookupGroup("tty"); err == nil {
		ttyGID, _ = strconv.Atoi(g.Gid)
	}
	switch {
	case s.unsealed != "":
		s.mapMode, s.mapWhy = MapPod, s.unsealed
		s.log.WarnContext(ctx, s.unsealed)
	case root:
		s.mapMode = MapNone
		plan.Groups = cfg.Owner.Groups
		plan.TTYGID = ttyGID
	default:
		mode, why, err := writeIDMaps(s.pid, cfg.Owner.Name, cfg.Owner.UID, cfg.Owner.GID)
		if err != nil {
			s.Kill()
			<-s.done
			return nil, fmt.Errorf("seal %s: map ids: %w", cfg.ID, err)
		}
		s.mapMode, s.mapWhy = mode, why
		if mode == MapSubordinate && ttyGID >= 0 {
			if r := ParseSubIDsFile("/etc/subgid", cfg.Owner.Name, cfg.Owner.UID); len(r) > 0 && mappedInside(ttyGID, cfg.Owner.GID, r[0]) {
				plan.TTYGID = ttyGID
			}
		}
		if mode == MapSingle {
			s.log.WarnContext(ctx, "single-id user namespace: programs that need other ids (xterm's tty group, smbd) may fail", "why", why)
		}
	}
	for port := range cfg.Egress {
		plan.EgressPorts = append(plan.EgressPorts, port)
	}
	for port := range cfg.EgressLocal {
		plan.EgressPorts = append(plan.EgressPorts, port)
	}
	plan.Binds = cfg.Binds
	if err := writeMsg(s.ctl, Message{Type: "plan", Plan: &plan}); err != nil {
		s.Kill()
		<-s.done
		return nil, fmt.Errorf("seal %s: %w", cfg.ID, err)
	}
	go s.readControl()
	go s.serveEgress()
	return s, nil
}

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("seal: empty session id")
	}
	if c.ScratchDir == "" {
		return fmt.Errorf("seal %s: no scratch directory", c.ID)
	}
	for _, h := range c.Hide {
		if !filepath.IsAbs(h) || filepath.Clean(h) != h || h == "/" {
			return fmt.Errorf("seal %s: hide %q: want a clean absolute path other than /", c.ID, h)
		}
	}
	root := os.Geteuid() == 0
	if root && c.Owner.UID == 0 {
		return fmt.Errorf("seal %s: refusing to run a session as root: name a real account as owner", c.ID)
	}
	if !root && c.Owner.UID != os.Getuid() {
		return fmt.Errorf("seal %s: owner %s (uid %d) is not the user running airlock (uid %d); only root can start a session for another user",
			c.ID, c.Owner.Name, c.Owner.UID, os.Getuid())
	}
	for port := range c.EgressLocal {
		if _, ok := c.Egress[port]; ok {
			return fmt.Errorf("seal %s: egress port %d given twice", c.ID, port)
		}
	}
	for _, b := range c.Binds {
		for _, p := range []string{b.Source, b.Target} {
			if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
				return fmt.Errorf("seal %s: bind %q: want a clean absolute path other than /", c.ID, p)
			}
		}
	}
	for _, p := range c.UnixSockets {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("seal %s: unix socket %q: want a clean absolute path", c.ID, p)
		}
	}
	workloads := 0
	for _, p := range c.Processes {
		if p.Role == Workload {
			workloads++
		}
		if len(p.Argv) == 0 && !p.Self {
			return fmt.Errorf("seal %s: process %q has an empty argv", c.ID, p.Name)
		}
		if p.Listener >= len(c.Listeners) {
			return fmt.Errorf("seal %s: process %q names listener %d of %d", c.ID, p.Name, p.Listener, len(c.Listeners))
		}
	}
	if workloads != 1 {
		return fmt.Errorf("seal %s: want exactly one workload, got %d", c.ID, workloads)
	}
	return nil
}

func socketpair(typ int) (parent *net.UnixConn, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "seal-parent")
	defer pf.Close()
	c, err := net.FileConn(pf)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "seal-child"), nil
}

// Pid is init's process id on the host.
func (s *Seal) Pid() int { return s.pid }

// IDMap says how ids were mapped and, for MapSingle, why no subordinate
// map (for MapPod, why no user namespace).
func (s *Seal) IDMap() (IDMapMode, string) { return s.mapMode, s.mapWhy }

// Unsealed says why init runs without namespaces (Config.PodFallback), or
// "" for a seal.
func (s *Seal) Unsealed() string { return s.unsealed }

// UnsealedWarning is what a session that fell back to the pod's isolation
// reports, in its ready event's warnings and its log.
func UnsealedWarning(errno syscall.Errno) string {
	return fmt.Sprintf("user namespaces forbidden by the cluster (%v); isolation is the pod's network namespace and its NetworkPolicy", errno)
}

// userNSForbidden reports whether err, from starting init in its
// namespaces, is how a kernel or seccomp filter says no to a new user
// namespace: EPERM (a filter, unprivileged_userns_clone = 0), ENOSPC
// (user.max_user_namespaces = 0, or its limit reached) or EINVAL (a filter
// that answers so).
func userNSForbidden(err error) (syscall.Errno, bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return 0, false
	}
	switch errno {
	case syscall.EPERM, syscall.ENOSPC, syscall.EINVAL:
		return errno, true
	}
	return 0, false
}

// Ready is closed when every probe accepts.
func (s *Seal) Ready() <-chan struct{} { return s.ready }

// Done is closed when init has exited.
func (s *Seal) Done() <-chan struct{} { return s.done }

// Result is how the seal ended; valid after Done is closed.
func (s *Seal) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Warnings lists what init could not set up but carried on without.
func (s *Seal) Warnings() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.warnings...)
}

// Stop asks init to end the session: SIGTERM to every process, SIGKILL to
// what is left after the grace period. reason becomes the Result's reason
// unless the seal already ended for another.
func (s *Seal) Stop(reason string) {
	s.stopOnce.Do(func() {
		s.setReason(reason, 0)
		if err := writeMsg(s.ctl, Message{Type: "stop", Reason: reason}); err != nil {
			s.Kill()
		}
	})
}

// Kill ends init at once with SIGKILL; the kernel then kills every process
// in its PID namespace.
//
// It holds mu while it signals, so finish cannot close the pidfd (whose
// number a new descriptor could then take) in between; once init is
// reaped it does nothing.
func (s *Seal) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reaped {
		return
	}
	if s.pidfd >= 0 {
		// The pidfd cannot name a recycled pid, unlike kill(2).
		err := unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0)
		if err == nil || errors.Is(err, unix.ESRCH) {
			return
		}
		s.log.Warn("kill seal init by its pidfd; trying its pid", "pid", s.pid, "error", err)
	}
	// Without a pidfd (a kernel before 5.3) the pid. Only between Wait's
	// reap and finish can it name another process; pidfds close that
	// window, which is why they come first.
	if err := unix.Kill(s.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Error("kill seal init", "pid", s.pid, "error", err)
	}
}

func (s *Seal) setReason(reason string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.result.Reason == "" {
		s.result = Result{Reason: reason, Code: code}
	}
}

func (s *Seal) readControl() {
	defer close(s.ctlRead)
	r := newMsgReader(s.ctl)
	for {
		m, err := r.read()
		if err != nil {
			return
		}
		switch m.Type {
		case "ready":
			s.mu.Lock()
			s.warnings = append(s.warnings, m.Warnings...)
			s.mu.Unlock()
			close(s.ready)
		case "exit":
			s.setReason(m.Reason, m.Code)
		case "error":
			s.setReason(m.Reason, cmp.Or(m.Code, 1))
		}
	}
}

func (s *Seal) finish(werr error) {
	code := 0
	if werr != nil {
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
		s.setReason(fmt.Sprintf("seal init ended: %v", werr), code)
	} else {
		s.setReason("seal init ended", 0)
	}
	s.ctl.Close()
	s.egress.Close()
	s.mu.Lock()
	s.reaped = true
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	s.mu.Unlock()
	close(s.done)
}

// serveEgress dials, outside the seal, the target of each egress request
// init makes and passes the connected socket in. Only ports named in
// Config.Egress are ever dialled.
func (s *Seal) serveEgress() {
	buf := make([]byte, 512)
	var wmu sync.Mutex
	for {
		n, _, _, _, err := s.egress.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return
		}
		var req EgressRequest
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			s.log.Warn("egress: malformed request from init", "error", err)
			continue
		}
		go func() {
			reply := EgressReply{ID: req.ID}
			target, ok := s.cfg.Egress[req.Port]
			local := s.cfg.EgressLocal[req.Port]
			var conn net.Conn
			switch {
			case local != nil:
				target = "local service"
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := local(ctx)
				cancel()
				if err != nil {
					reply.Error = err.Error()
				} else {
					conn = c
					defer c.Close()
				}
			case !ok:
				reply.Error = fmt.Sprintf("port %d is not an egress exception", req.Port)
			default:
				d := net.Dialer{Timeout: 10 * time.Second}
				c, err := d.Dial("tcp", target)
				if err != nil {
					reply.Error = err.Error()
				} else {
					conn = c
					defer c.Close()
				}
			}
			b, _ := json.Marshal(reply)
			wmu.Lock()
			defer wmu.Unlock()
			if conn != nil {
				if err := fdpass.SendConn(s.egress, b, conn); err != nil {
					s.log.Warn("egress: pass connection into the seal", "target", target, "error", err)
				} else {
					s.log.Info("egress connection", "port", req.Port, "target", target)
				}
				return
			}
			s.log.Warn("egress refused", "port", req.Port, "reason", reply.Error)
			if _, _, err := s.egress.WriteMsgUnix(b, nil, nil); err != nil {
				// Init gives up waiting on its own (egressWait).
				s.log.Warn("egress: tell init of a refusal", "port", req.Port, "error", err)
			}
		}()
	}
}
