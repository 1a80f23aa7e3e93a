// Package local is the embedded default backend: it starts `airlock run`
// as a detached process on this machine, keeps its spec, its event lines
// and its log in the state directory, and re-attaches to it by pid after a
// gateway restart.
package local

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
)

// Config configures the local backend.
type Config struct {
	// Dir holds one directory per session (spec, events, log). Required.
	Dir string
	// Exe is the airlock binary. Default: this process's executable.
	Exe string
	// Poll is how often Watch looks for new events and checks the runner
	// is alive. Default 200ms.
	Poll   time.Duration
	Logger *slog.Logger
}

// Backend is the local backend.
type Backend struct {
	cfg Config
	log *slog.Logger
}

var _ backend.Backend = (*Backend)(nil)

// New checks cfg and returns a backend.
func New(cfg Config) (*Backend, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local backend: no directory")
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local backend: find airlock binary: %w", err)
		}
		cfg.Exe = exe
	}
	cfg.Poll = cmp.Or(cfg.Poll, 200*time.Millisecond)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	return &Backend{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "backend", "backend", "local")}, nil
}

// Name is "local".
func (b *Backend) Name() string { return "local" }

// SessionDir is where a session's files live; the gateway puts the
// session's ticket key and UNIX sockets there too.
func (b *Backend) SessionDir(id string) string { return filepath.Join(b.cfg.Dir, id) }

// Start writes the spec and starts the runner in its own session, detached
// (--outlive-parent): the gateway may restart, the session goes on. The
// runner runs as the gateway (it seals the session as job.Owner itself).
func (b *Backend) Start(ctx context.Context, job backend.Job) (string, error) {
	id, spec := job.ID, job.Spec
	dir := b.SessionDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, spec, 0o600); err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	events, err := os.OpenFile(filepath.Join(dir, "events.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	defer events.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "runner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	defer logf.Close()
	cmd := exec.Command(b.cfg.Exe, "run", "--spec", specPath, "--outlive-parent", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = events, logf
	cmd.Dir = dir
	if len(job.Env) > 0 {
		cmd.Env = os.Environ()
		for k, v := range job.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", id, err)
	}
	pid := cmd.Process.Pid
	ref := fmt.Sprintf("pid:%d:%d", pid, startTime(pid))
	// Reap it while we live; after a restart, init adopts it.
	go cmd.Wait()
	b.log.InfoContext(ctx, "runner started", "session", id, "ref", ref)
	return ref, nil
}

// startTime is the process's start time in clock ticks since boot (field
// 22 of /proc/PID/stat): with the pid it names one process, even after the
// pid is reused.
func startTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// alive reports whether ref still names a running (not zombie) process.
func alive(ref string) (int, bool) {
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(ref, "pid:%d:%d", &pid, &st); err != nil || pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pid, false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 && s[i+2] == 'Z' {
		return pid, false
	}
	return pid, startTime(pid) == st
}

// Stop sends the runner SIGTERM; it tears the session down.
func (b *Backend) Stop(ctx context.Context, id, ref string) error {
	pid, ok := alive(ref)
	if !ok {
		return fmt.Errorf("stop %s: %w", id, backend.ErrGone)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// Watch tails the session's event file and checks that the runner lives.
func (b *Backend) Watch(ctx context.Context, id, ref string) (<-chan backend.Event, error) {
	f, err := os.Open(filepath.Join(b.SessionDir(id), "events.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", id, backend.ErrGone)
	}
	ch := make(chan backend.Event, 4)
	go func() {
		defer close(ch)
		defer f.Close()
		host, _ := os.Hostname()
		rd := bufio.NewReader(f)
		var partial string
		send := func(e backend.Event) bool {
			select {
			case ch <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		t := time.NewTicker(b.cfg.Poll)
		defer t.Stop()
		for {
			// Read what is there; check liveness only after reading, so an
			// exit line written just before the runner ended is not missed.
			_, live := alive(ref)
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					partial += line
					break
				}
				line, partial = partial+line, ""
				e, ok := DecodeEvent([]byte(line), host)
				if !ok {
					continue
				}
				if !send(e) || e.Kind == contract.EventExit {
					return
				}
			}
			if !live {
				send(backend.Event{Kind: contract.EventExit, Reason: "runner ended without reporting why (killed?)", Code: -1})
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch, nil
}

// DecodeEvent reads one of the runner's event lines as the gateway is to
// see it: the runner's own event, on this node (host). A line that is not
// an event (ok false) is skipped: the runner writes nothing else there, so
// it can only be a torn write.
func DecodeEvent(line []byte, host string) (e backend.Event, ok bool) {
	if json.Unmarshal(line, &e) != nil || e.Kind == "" {
		return backend.Event{}, false
	}
	e.Node = host
	return e, true
}
