package anchorbench

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one proxy process, started in its own process group so that
// stopping it also reaches the children websockify forks per connection.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// port is the TCP port an anchor was told to bind; 0 for a connector,
	// whose listener this process binds and hands over.
	port int
	// strict makes stop report a process that ignored SIGTERM.
	strict bool

	exited   chan struct{} // closed once Wait has returned
	waitErr  error         // valid once exited is closed
	stopOnce sync.Once
	stopErr  error
}

// startProc starts argv with stdout and stderr in dir/name.log, extra as
// fds 3, 4, ..., and env added to the test's environment. The caller must
// call stop.
func startProc(dir, name string, argv []string, extra []*os.File, env ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = extra
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// A backstop for a test binary killed before stop runs (a
		// benchmark is not subject to -timeout). Pdeathsig follows the
		// thread that forked, not the process (golang/go#27505), but
		// nothing here locks a thread, and the Go runtime does not end
		// unlocked ones. websockify's per-connection children are not
		// covered: they exit on their own once their sockets close.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive returns an error, with the end of the process's log, once it has
// exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); log ends:\n%s", p.name, p.waitErr, tail(p.logPath, 2048))
	default:
		return nil
	}
}

// stopTimeout bounds how long a proxy may take to exit after SIGTERM
// before it gets SIGKILL. The connector may take up to its own shutdown
// bound (5 s) to wait for its connections; this is twice that.
const stopTimeout = 10 * time.Second

// stop sends SIGTERM to the process group, SIGKILL after stopTimeout, and
// SIGKILL again to whatever is left of the group once the leader is gone
// (websockify's per-connection children outlive it). It is idempotent. It
// reports an error only if a process marked strict (airlock's own) had to
// be killed: an anchor slow to stop is not what is measured.
func (p *proc) stop() error {
	p.stopOnce.Do(func() {
		pg := p.pid()
		syscall.Kill(-pg, syscall.SIGTERM)
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			syscall.Kill(-pg, syscall.SIGKILL)
			<-p.exited
			if p.strict {
				p.stopErr = fmt.Errorf("stop %s: still running %v after SIGTERM, killed", p.name, stopTimeout)
			}
		}
		// The group id stays reserved while any member lives, so this
		// reaches only what p started.
		syscall.Kill(-pg, syscall.SIGKILL)
	})
	return p.stopErr
}

// tree returns pid and all its descendants, read from /proc.
func tree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pids[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue // the task ended
			}
			for f := range strings.FieldsSeq(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// memory is the resident memory of a process tree, in KiB.
type memory struct {
	rss, pss int64
	procs    int
}

// treeMemory sums VmRSS (what the targets are stated in) and Pss (RSS with
// shared pages divided among their sharers, fairer to a forking server)
// over pid and its descendants.
func treeMemory(pid int) (memory, error) {
	var m memory
	for _, p := range tree(pid) {
		rss, err := procField(fmt.Sprintf("/proc/%d/status", p), "VmRSS:")
		if err != nil {
			if p == pid {
				return memory{}, err
			}
			continue // a child that just exited
		}
		pss, _ := procField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
		m.rss += rss
		m.pss += pss
		m.procs++
	}
	return m, nil
}

// procField returns the value in kB of the first line of a /proc file
// that starts with key.
func procField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				break
			}
			n, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: field %s %q: %w", path, key, fs[0], err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("read %s: no field %s", path, key)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for the anchors, which insist on binding their own listener.
// listeningOn then checks that the anchor, not someone else, holds it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var errNotListening = errors.New("not listening yet")

// listeningOn reports whether a process in pid's tree holds a socket
// listening on 127.0.0.1:port, by matching socket inodes in
// /proc/PID/fd with the LISTEN rows of /proc/net/tcp.
func listeningOn(pid, port int) error {
	inodes := make(map[string]bool)
	for _, p := range tree(pid) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name()))
			if err != nil {
				continue
			}
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return fmt.Errorf("check listener of %d: %w", pid, err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for line := range strings.Lines(string(b)) {
		fs := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(fs) >= 10 && fs[1] == want && fs[3] == "0A" {
			if inodes[fs[9]] {
				return nil
			}
			return fmt.Errorf("check listener of %d: 127.0.0.1:%d is held by another process", pid, port)
		}
	}
	return fmt.Errorf("check listener of %d: 127.0.0.1:%d: %w", pid, port, errNotListening)
}
