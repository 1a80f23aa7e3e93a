package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/clientauth"
	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/seal"
)

// cmdForward is `airlock forward`: publish a web app of this node on the
// gateway through a tunnel it dials out (internal/forward).
func cmdForward(ctx context.Context, env *Env, args []string) int {
	fs := newFlags(env, "forward", "[--gateway URL] [--name NAME] [--socket [--seal] | --port N | --to unix:PATH|127.0.0.1:PORT] [-- CMD ARGS...]")
	gw := fs.String("gateway", "", "the gateway's https:// URL (default: the one airlock login kept, or AIRLOCK_GATEWAY)")
	ca := fs.String("ca", "", "PEM file of the CA that signed the gateway's certificate (default: the one airlock login kept, or AIRLOCK_CA; else the system roots)")
	name := fs.String("name", "", "the forward's name, [a-z0-9]{1,32}: the URL is https://NAME-USER.APPS-DOMAIN/ (default: from CMD, or \"app\")")
	sock := fs.Bool("socket", false, "give CMD a UNIX socket path in a fresh 0700 directory ({socket}, AIRLOCK_SOCKET); the default with CMD")
	port := fs.Int("port", -1, "give CMD a loopback TCP port ({port}, AIRLOCK_PORT); 0 picks a free one")
	to := fs.String("to", "", "forward an app that already runs: unix:PATH or 127.0.0.1:PORT (no CMD)")
	sealed := fs.Bool("seal", false, "run CMD in a seal of its own (own network with loopback only, private /tmp where its socket is): only the forwarder reaches it and it reaches nothing; needs --socket")
	wait := fs.Duration("ready-timeout", 2*time.Minute, "how long CMD may take to accept connections")
	newLog := logFlags(fs)
	if c := parse(fs, args); c >= 0 {
		return c
	}
	log, err := newLog(env.Stderr)
	if err != nil {
		return fail(env, "%v", err)
	}
	cmdArgs := fs.Args()
	switch {
	case *to != "" && len(cmdArgs) > 0:
		return fail(env, "--to forwards an app that runs already: give it or a command after --, not both")
	case *to == "" && len(cmdArgs) == 0:
		fs.Usage()
		return 2
	case *sock && *port >= 0:
		return fail(env, "--socket and --port: choose one")
	case *to != "" && (*sock || *port >= 0):
		return fail(env, "--socket and --port are for a command to listen on; --to names the address itself")
	case *sealed && (*port >= 0 || *to != ""):
		return fail(env, "--seal runs CMD with a socket in its private /tmp: not with --port (a port in the seal's own network is out of the forwarder's reach) nor --to")
	case *port > 65535:
		return fail(env, "--port %d: want 0 to 65535", *port)
	}
	creds, err := clientauth.Load()
	if *gw != "" {
		creds.Gateway = strings.TrimSuffix(*gw, "/")
	}
	if *ca != "" {
		creds.CAFile = *ca
	}
	if err != nil && (!errors.Is(err, clientauth.ErrNoLogin) || creds.Token == "" || creds.Gateway == "") {
		return fail(env, "%v", err)
	}
	if !strings.HasPrefix(creds.Gateway, "https://") {
		return fail(env, "gateway %q: want an https:// URL", creds.Gateway)
	}
	tlsConf, err := creds.TLS()
	if err != nil {
		return fail(env, "%v", err)
	}
	if *name == "" {
		*name = defaultForwardName(cmdArgs)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	target := *to
	var app runningApp
	if target != "" {
		if target, err = forward.ParseTarget(target); err != nil {
			return fail(env, "%v", err)
		}
	} else {
		var cleanup func()
		if *sealed {
			app, target, cleanup, err = startSealedApp(ctx, cmdArgs, env, log)
		} else {
			app, target, cleanup, err = startApp(cmdArgs, *port, env)
		}
		if err != nil {
			return fail(env, "%v", err)
		}
		defer cleanup()
		if err := waitListening(ctx, target, app.exited(), *wait); err != nil {
			app.end()
			return fail(env, "%v", err)
		}
	}

	// Another local user may hold the port or the socket's path
	// (forward.ErrNotOwn): said now, not only to each visitor. An app not
	// up yet (--to) is no error.
	if err := forward.CheckTarget(ctx, target); errors.Is(err, forward.ErrNotOwn) {
		if app != nil {
			app.end()
		}
		return fail(env, "%v", err)
	}
	c := &forward.Client{Gateway: creds.Gateway, Token: creds.Token, TLS: tlsConf, Log: log}
	host, _ := os.Hostname()
	f, err := c.Create(ctx, *name, host)
	if err != nil {
		if app != nil {
			app.end()
		}
		return fail(env, "%v", err)
	}
	fmt.Fprintln(env.Stdout, f.URL)
	log.Info("forwarding", "url", f.URL, "session", f.ID, "to", target)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if app != nil {
		go func() {
			select {
			case <-app.exited():
				cancel()
			case <-sctx.Done():
			}
		}()
	}
	serr := c.Serve(sctx, f, target, forward.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}, nil)
	code := 0
	switch {
	case errors.Is(serr, forward.ErrStopped):
		log.Info("the forward was stopped on the gateway; ending the app")
	case serr != nil:
		log.Error("tunnel", "error", serr)
		code = 1
	}
	if !errors.Is(serr, forward.ErrStopped) {
		// Interrupted, the app gone, or the tunnel refused: the URL must
		// stop working now, not when the gateway's grace runs out.
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Stop(sctx, f); err != nil {
			log.Warn("stop the forward on the gateway", "error", err)
		}
		scancel()
	}
	if app != nil {
		select {
		case <-app.exited():
			log.Info("the app ended", "status", app.status())
			if c := app.code(); c > 0 {
				code = c
			}
		default:
			app.end()
		}
	}
	return code
}

// defaultForwardName is a name from the command: its program's base name
// in lower-case letters and digits, or "app".
func defaultForwardName(argv []string) string {
	if len(argv) == 0 {
		return "app"
	}
	var b strings.Builder
	for _, c := range strings.ToLower(filepath.Base(argv[0])) {
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			b.WriteRune(c)
		}
	}
	s := b.String()
	if len(s) > 32 {
		s = s[:32]
	}
	if s == "" {
		return "app"
	}
	return s
}

// startApp starts argv with a socket in a fresh 0700 directory, or a
// loopback port, substituted for {socket}/{port} and in its environment.
// Its own process group, so ending it ends what it started.
func startApp(argv []string, port int, env *Env) (runningApp, string, func(), error) {
	var target, sockPath string
	cleanup := func() {}
	extra := []string{}
	if port >= 0 {
		if port == 0 {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, "", nil, fmt.Errorf("pick a free port: %w", err)
			}
			port = ln.Addr().(*net.TCPAddr).Port
			ln.Close()
		}
		target = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		extra = append(extra, "AIRLOCK_PORT="+strconv.Itoa(port))
	} else {
		dir, err := os.MkdirTemp(os.Getenv("XDG_RUNTIME_DIR"), "airlock-forward-")
		if err != nil {
			return nil, "", nil, fmt.Errorf("socket directory: %w", err)
		}
		// MkdirTemp makes it 0700: only this user reaches the socket.
		cleanup = func() { os.RemoveAll(dir) }
		sockPath = filepath.Join(dir, "app.sock")
		target = "unix:" + sockPath
		extra = append(extra, "AIRLOCK_SOCKET="+sockPath)
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		a = strings.ReplaceAll(a, "{socket}", sockPath)
		a = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
		args[i] = a
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), extra...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, env.Stderr, env.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	a := &plainApp{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits,
		// not the process (golang/go#27505): start and wait on one locked
		// thread, as the seal does.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		a.err = cmd.Wait()
		close(a.done)
	}()
	if err := <-started; err != nil {
		cleanup()
		return nil, "", nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	return a, target, cleanup, nil
}

// runningApp is the app `airlock forward` started.
type runningApp interface {
	exited() <-chan struct{} // closed when it has ended
	status() string          // how it ended, once exited
	code() int               // its exit code, once exited (0 if none)
	end()                    // ends it and waits
}

// plainApp is the command in its own process group.
type plainApp struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (a *plainApp) exited() <-chan struct{} { return a.done }
func (a *plainApp) status() string          { return fmt.Sprint(a.err) }
func (a *plainApp) code() int {
	if ee, ok := errors.AsType[*exec.ExitError](a.err); ok {
		return max(ee.ExitCode(), 0)
	}
	return 0
}
func (a *plainApp) end() { endApp(a.cmd, a.done) }

// sealedApp is the command as the workload of a seal of its own.
type sealedApp struct{ s *seal.Seal }

func (a *sealedApp) exited() <-chan struct{} { return a.s.Done() }
func (a *sealedApp) status() string          { return a.s.Result().Reason }
func (a *sealedApp) code() int               { return max(a.s.Result().Code, 0) }
func (a *sealedApp) end() {
	a.s.Stop("the forward ended")
	select {
	case <-a.s.Done():
	case <-time.After(15 * time.Second):
		a.s.Kill()
		<-a.s.Done()
	}
}

// sealSocket is the app's socket inside its seal: the seal's /tmp is the
// forward's 0700 directory on the host, where the forwarder reaches it.
const sealSocket = "/tmp/app.sock"

// startSealedApp starts argv in a seal (own network with only loopback,
// own /tmp, no privileges): the app reaches nothing outside, and only the
// forwarder, through the socket in the seal's /tmp, reaches the app.
func startSealedApp(ctx context.Context, argv []string, env *Env, log *slog.Logger) (runningApp, string, func(), error) {
	owner, err := seal.LookupOwner("")
	if err != nil {
		return nil, "", nil, err
	}
	dir, err := os.MkdirTemp(os.Getenv("XDG_RUNTIME_DIR"), "airlock-forward-")
	if err != nil {
		return nil, "", nil, fmt.Errorf("seal directory: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = strings.ReplaceAll(a, "{socket}", sealSocket)
	}
	wd, _ := os.Getwd()
	keep := []string{"AIRLOCK_SOCKET=" + sealSocket}
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME"} {
		if v, ok := os.LookupEnv(k); ok {
			keep = append(keep, k+"="+v)
		}
	}
	// The app runs as the user: it must not read the token the forwarder
	// holds (`airlock login` keeps it in the user's config directory).
	var hide []string
	if p, err := clientauth.Path(); err == nil {
		hide = append(hide, filepath.Dir(p))
	}
	s, err := seal.Start(ctx, seal.Config{
		ID: "forward-" + filepath.Base(dir), Owner: owner, ScratchDir: dir, Stderr: env.Stderr, Logger: log, Hide: hide,
		Processes: []seal.Process{{Name: "app", Role: seal.Workload, Argv: args, Env: keep, Dir: wd, Listener: -1}},
		Probes:    []string{"unix:" + sealSocket},
	})
	if err != nil {
		cleanup()
		return nil, "", nil, fmt.Errorf("seal the app: %w", err)
	}
	return &sealedApp{s: s}, "unix:" + filepath.Join(dir, "app.sock"), cleanup, nil
}

// waitListening waits until the app accepts connections on target.
func waitListening(ctx context.Context, target string, exited <-chan struct{}, d time.Duration) error {
	network, addr := "tcp", target
	if p, ok := strings.CutPrefix(target, "unix:"); ok {
		network, addr = "unix", p
	}
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the app did not listen on %s within %s: %w", target, d, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("the app ended before it listened on %s", target)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// endApp ends the app's process group: SIGTERM, then SIGKILL after 5 s.
func endApp(cmd *exec.Cmd, exited <-chan struct{}) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}
