// Package realtest starts the real things airlock's tests run against: the
// airlock binary itself, `airlock run` sessions, Xvnc, and the unprivileged
// account sessions run as. Only _test.go files may import it.
package realtest

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WaitFor calls try until it returns nil or timeout passes; it returns the
// last error then.
func WaitFor(timeout time.Duration, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	buildMu  sync.Mutex
	binDir   string
	built    = map[string]string{}
	buildErr = map[string]error{}
)

// Binary builds the airlock binary once per test process into a directory
// every user may read, and returns its path. It is built as the tests are:
// with cgo when CGO_ENABLED=1 is in the environment (so `CGO_ENABLED=1 go
// test` runs the seal from a default, cgo build), without cgo otherwise, as
// `make build` does.
func Binary(t testing.TB) string {
	t.Helper()
	return build(t, "github.com/airlock-hpc/airlock/cmd/airlock", "airlock", cgoFromEnv())
}

// CgoBinary builds the airlock binary with cgo, as a plain `go build` or `go
// install` does wherever a C compiler is installed. It skips when none is.
func CgoBinary(t testing.TB) string {
	t.Helper()
	cc := cmp.Or(os.Getenv("CC"), "gcc")
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s): a cgo build is not possible here", cc)
	}
	return build(t, "github.com/airlock-hpc/airlock/cmd/airlock", "airlock-cgo", "1")
}

// Probe builds the network probe (internal/realtest/probe) the same way.
func Probe(t testing.TB) string {
	t.Helper()
	return build(t, "github.com/airlock-hpc/airlock/internal/realtest/probe", "probe", "0")
}

func cgoFromEnv() string {
	if os.Getenv("CGO_ENABLED") == "1" {
		return "1"
	}
	return "0"
}

// StateBase is where tests keep files that must be visible inside a seal
// (whose /tmp is its own): /var/lib/airlock-test as root, else the
// repository's .artifacts.
func StateBase() string {
	if os.Geteuid() == 0 {
		return "/var/lib/airlock-test"
	}
	return filepath.Join(moduleRoot(), ".artifacts")
}

// OutsideTmp makes a fresh directory under StateBase, removed at the end
// of the test. It skips when that is under /tmp after all (an
// unprivileged run of a checkout in /tmp).
func OutsideTmp(t testing.TB, prefix string) string {
	t.Helper()
	base, _ := filepath.Abs(StateBase())
	if base == "/tmp" || strings.HasPrefix(base, "/tmp/") {
		t.Skipf("%s is under /tmp, which a seal replaces; run as root or from a checkout elsewhere", base)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func build(t testing.TB, pkg, name, cgo string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	if err, ok := buildErr[name]; ok {
		t.Fatal(err)
	}
	if binDir == "" {
		// Not under /tmp: the seal hides the host's /tmp, and the probe must
		// be runnable inside it, by the test account too.
		base := StateBase()
		if err := os.MkdirAll(base, 0o755); err != nil {
			t.Fatal(err)
		}
		sweepBinDirs(base)
		dir, err := os.MkdirTemp(base, "bin-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, binOwnerFile), []byte(procStamp(os.Getpid())), 0o644); err != nil {
			t.Fatal(err)
		}
		binDir = dir
	}
	path := filepath.Join(binDir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr[name] = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		t.Fatal(buildErr[name])
	}
	built[name] = path
	return path
}

// binOwnerFile names the test process a bin- directory is for.
const binOwnerFile = "owner"

// sweepBinDirs removes the bin- directories under base of test processes
// that are gone. Nothing runs when a test process exits, so each leaves
// its binaries (about 200 MB) behind; a full `make test` makes some sixty
// such processes, and they filled this machine's disk before this sweep.
// A directory without an owner (being made now, or made before owners
// were written) is left alone for an hour.
func sweepBinDirs(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "bin-") {
			continue
		}
		dir := filepath.Join(base, e.Name())
		owner, err := os.ReadFile(filepath.Join(dir, binOwnerFile))
		if err != nil {
			fi, err := e.Info()
			if err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue
			}
		} else if pid, err := strconv.Atoi(strings.Fields(string(owner) + " x")[0]); err == nil && procStamp(pid) == string(owner) {
			continue // its process runs
		}
		os.RemoveAll(dir)
	}
}

// procStamp names process pid for as long as it runs: its pid and start
// time (a pid alone may be reused); "" if there is no such process.
func procStamp(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// Fields after the command's closing parenthesis: state is the
	// first, the start time (field 22 of stat) the twentieth.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return ""
	}
	return fmt.Sprintf("%d %s", pid, f[19])
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Account is a local user sessions can run as.
type Account struct {
	Name     string
	UID, GID int
	Home     string
}

// TestUser returns the unprivileged account named by AIRLOCK_TEST_USER
// (made by scripts/test-user.sh, which `make test` runs), or skips.
func TestUser(t testing.TB) Account {
	t.Helper()
	name := os.Getenv("AIRLOCK_TEST_USER")
	if name == "" {
		t.Skip("AIRLOCK_TEST_USER not set (make test sets it up as root)")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("AIRLOCK_TEST_USER=%s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return Account{Name: name, UID: uid, GID: gid, Home: u.HomeDir}
}

// Current is the account running the tests.
func Current(t testing.TB) Account {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}
}

// SharedDir makes a directory under /tmp that acct owns (so a runner started
// as acct can use it), removed at the end of the test.
func SharedDir(t testing.TB, acct Account) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "airlock-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, acct.UID, acct.GID); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// WriteFile writes a file owned by acct.
func WriteFile(t testing.TB, acct Account, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.Chown(path, acct.UID, acct.GID)
	}
}

// Event is a line `airlock run` prints on stdout.
type Event struct {
	Event     string            `json:"event"`
	ID        string            `json:"id"`
	Endpoints map[string]string `json:"endpoints"`
	TLSSHA256 string            `json:"tls_sha256"`
	IDMap     string            `json:"id_map"`
	Accel     string            `json:"accel"`
	Warnings  []string          `json:"warnings"`
	Reason    string            `json:"reason"`
	Code      *int              `json:"code"`
	// Target and Verdict: an egress event's (a kiosk's proxy).
	Target  string `json:"target"`
	Verdict string `json:"verdict"`
}

// Runner is an `airlock run` process.
type Runner struct {
	Cmd    *exec.Cmd
	Ready  Event
	Stderr *LockedBuffer

	events chan Event
	exit   chan struct{}
	mu     sync.Mutex
	last   *Event
	// others are the events besides ready and exit (egress), any number:
	// kept here so that a chatty runner never blocks on its stdout.
	others []Event
	werr   error
}

// LockedBuffer is a log a test reads while a process or goroutines write
// it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RunOptions says how to start a runner.
type RunOptions struct {
	// As runs the runner as this account instead of the test's.
	As *Account
	// Netns runs the runner inside this named network namespace (ip netns).
	Netns string
	// NoWaitReady returns as soon as the process started.
	NoWaitReady bool
	// Binary is the airlock binary to run instead of Binary's.
	Binary string
	// Wrap is a command line the runner's is appended to, e.g. a probe mode
	// that changes what the kernel offers it.
	Wrap []string
	// Env is added to the runner's environment (NAME=value).
	Env []string
}

// StartRunner starts `airlock run --spec -` with spec on stdin and waits for
// its ready event. The runner is stopped (and its end awaited) at cleanup.
func StartRunner(t testing.TB, spec any, opt RunOptions) *Runner {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	bin := opt.Binary
	if bin == "" {
		bin = Binary(t)
	}
	args := []string{"run", "--spec", "-"}
	cmd := exec.Command(bin, args...)
	if opt.Netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", opt.Netns, bin}, args...)...)
	}
	if len(opt.Wrap) > 0 {
		cmd = exec.Command(opt.Wrap[0], append(append(opt.Wrap[1:len(opt.Wrap):len(opt.Wrap)], bin), args...)...)
	}
	cmd.Stdin = strings.NewReader(string(b))
	r := &Runner{Cmd: cmd, Stderr: &LockedBuffer{}, events: make(chan Event, 8), exit: make(chan struct{})}
	cmd.Stderr = r.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if opt.As != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(opt.As.UID), Gid: uint32(opt.As.GID)}
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + opt.As.Home, "USER=" + opt.As.Name, "TMPDIR=/tmp"}
	}
	if len(opt.Env) > 0 {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, opt.Env...)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				if e.Event != "ready" && e.Event != "exit" {
					r.mu.Lock()
					r.others = append(r.others, e)
					r.mu.Unlock()
					continue
				}
				r.mu.Lock()
				r.last = &e
				r.mu.Unlock()
				r.events <- e
			}
		}
		r.werr = cmd.Wait()
		close(r.exit)
		close(r.events)
	}()
	t.Cleanup(func() {
		r.Signal(syscall.SIGTERM)
		select {
		case <-r.exit:
		case <-time.After(30 * time.Second):
			r.Signal(syscall.SIGKILL)
			<-r.exit
		}
		if t.Failed() {
			t.Logf("runner stderr:\n%s", r.Stderr.String())
		}
	})
	if opt.NoWaitReady {
		return r
	}
	select {
	case e, ok := <-r.events:
		if !ok || e.Event != "ready" {
			t.Fatalf("runner did not get ready: event %+v\nstderr:\n%s", e, r.Stderr.String())
		}
		r.Ready = e
	case <-time.After(60 * time.Second):
		t.Fatalf("runner not ready after 60s; stderr:\n%s", r.Stderr.String())
	}
	return r
}

// Signal sends sig to the runner process.
func (r *Runner) Signal(sig syscall.Signal) {
	if r.Cmd.Process != nil {
		r.Cmd.Process.Signal(sig)
	}
}

// WaitExit waits for the runner to end and returns its exit event.
func (r *Runner) WaitExit(t testing.TB, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-r.events:
			if !ok {
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.last != nil && r.last.Event == "exit" {
					return *r.last
				}
				return Event{Event: "gone"}
			}
			if e.Event == "exit" {
				<-r.exit
				return e
			}
		case <-deadline:
			t.Fatalf("runner did not exit within %s; stderr:\n%s", timeout, r.Stderr.String())
		}
	}
}

// Others returns the events so far other than ready and exit.
func (r *Runner) Others() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.others...)
}

// Exited is closed when the runner process has ended.
func (r *Runner) Exited() <-chan struct{} { return r.exit }

// ProcessesOf lists the pids of processes whose environment or command line
// mentions marker: how the teardown tests find what a session left behind.
func ProcessesOf(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			// Zombies are gone for every purpose but their parent's wait.
			if f := strings.Fields(string(st)); len(f) > 2 && strings.Contains(string(st), ") Z ") {
				continue
			}
		}
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile("/proc/" + e.Name() + "/" + f)
			if err == nil && strings.Contains(string(b), marker) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// ErrStillThere is returned by the teardown checks.
var ErrStillThere = errors.New("still there")

// Gone returns nil once no process mentions marker and no path exists.
func Gone(marker string, paths ...string) error {
	if p := ProcessesOf(marker); len(p) > 0 {
		return fmt.Errorf("processes %v: %w", p, ErrStillThere)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrStillThere)
		}
	}
	return nil
}

// ReadAllString reads r fully.
func ReadAllString(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// LeakCheckMain runs the tests, then fails the run if, after up to 5 s,
// any goroutine other than the caller still runs code whose stack mentions
// one of markers (a package path): a test left a connection, a timer loop
// or a database handle behind. Use it as a package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(realtest.LeakCheckMain(m, "airlock/internal/relay")) }
func LeakCheckMain(m *testing.M, markers ...string) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		// The first stanza is the caller itself.
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			for _, mk := range markers {
				if strings.Contains(g, mk) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "leaked %d goroutines:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			return 1
		}
		time.Sleep(10 * time.Millisecond)
	}
}
