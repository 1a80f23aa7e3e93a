package runner

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// JanitorRole is the hidden subcommand that cleans up after a runner that
// died without cleaning up itself (SIGKILL, OOM killer).
const JanitorRole = "seal-janitor"

// janitor is the runner's handle on its janitor process: a pipe whose EOF,
// however the runner ends, tells the janitor to clean up.
type janitor struct {
	w *os.File
}

// startJanitor starts `airlock seal-janitor PATH...` in its own session, so
// a signal to the runner's process group does not reach it. It removes the
// paths (in reverse order) once the runner is gone and the seal's init has
// exited; after a clean run they are already gone and it does nothing.
func (r *run) startJanitor() (*janitor, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("janitor pipe: %w", err)
	}
	defer pr.Close()
	exe := r.cfg.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	cmd := exec.Command(exe, append([]string{JanitorRole}, r.cleanup...)...)
	cmd.Args[0] = "airlock-janitor"
	cmd.ExtraFiles = []*os.File{pr}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start janitor: %w", err)
	}
	// Nobody waits for it: it outlives us by design. Release it so the
	// runtime does not keep its handle.
	cmd.Process.Release()
	return &janitor{w: pw}, nil
}

// watch tells the janitor which init to wait for.
func (j *janitor) watch(pid int) {
	fmt.Fprintf(j.w, "%d\n", pid)
}

// done tells the janitor the runner cleaned up itself, and lets it go.
func (j *janitor) done() {
	fmt.Fprintln(j.w, "done")
	j.w.Close()
}

// RunJanitor is the janitor's whole life.
func RunJanitor(paths []string) int {
	unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0)
	f := os.NewFile(3, "janitor")
	rd := bufio.NewReader(f)
	pidfd := -1
	for {
		line, err := rd.ReadString('\n')
		if strings.TrimSpace(line) == "done" {
			return 0
		}
		if pid, perr := strconv.Atoi(strings.TrimSpace(line)); perr == nil && pid > 0 {
			if fd, err := unix.PidfdOpen(pid, 0); err == nil {
				pidfd = fd
			}
		}
		if err != nil {
			break
		}
	}
	if pidfd >= 0 {
		// Init gets SIGKILL when the runner dies; wait for it so nothing in
		// the seal still uses the files we remove.
		unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			n, err := unix.Poll(fds, 1000)
			if n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
	}
	for i := len(paths) - 1; i >= 0; i-- {
		os.RemoveAll(paths[i])
	}
	return 0
}
