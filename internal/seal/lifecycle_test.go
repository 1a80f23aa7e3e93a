package seal

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// syncBuffer is a log a test reads while goroutines write it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// unixPair is a connected pair of UNIX sockets of type typ.
func unixPair(t *testing.T, typ int) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// victim is a process standing for whatever got a seal init's pid or
// pidfd number after init was reaped; exited is closed once it is.
func victim(t *testing.T) (cmd *exec.Cmd, exited chan struct{}) {
	t.Helper()
	cmd = exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return cmd, exited
}

// signalledFirst sends the victim SIGTERM and returns the signal it died
// of: SIGKILL if one reached it before (a process dying of a fatal signal
// ignores any that come after), else SIGTERM. No waiting to see whether
// something happens.
func signalledFirst(t *testing.T, cmd *exec.Cmd, exited chan struct{}) syscall.Signal {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		t.Fatalf("the victim did not die of a signal: %v", cmd.ProcessState)
	}
	return ws.Signal()
}

// finishedSeal is a Seal whose init (pid) has been started, for the
// tests to finish and kill.
func finishedSeal(t *testing.T, pid, pidfd int) *Seal {
	ctl, _ := unixPair(t, unix.SOCK_STREAM)
	eg, _ := unixPair(t, unix.SOCK_SEQPACKET)
	return &Seal{log: slog.New(slog.DiscardHandler), ctl: ctl, egress: eg, pid: pid, pidfd: pidfd,
		ready: make(chan struct{}), done: make(chan struct{})}
}

// TestKillAfterFinishSignalsNothing: once init has been reaped its pid may
// be another process's; a late Kill must not signal it. On main finish
// dropped the pidfd and Kill fell back to kill(2) on the stale pid.
func TestKillAfterFinishSignalsNothing(t *testing.T) {
	v, exited := victim(t)
	s := finishedSeal(t, v.Process.Pid, -1)
	s.finish(nil)
	s.Kill()
	if sig := signalledFirst(t, v, exited); sig != syscall.SIGTERM {
		t.Fatalf("a Kill after finish killed the process that has the pid now (%v)", sig)
	}
}

// TestKillRacesFinish: Kill and finish at once, as a runner that stops a
// session while its init exits does. On main Kill read the pidfd without
// the lock finish closes it under, so a descriptor opened in between (here
// the victim's pidfd, given the freed number) could be signalled; the race
// detector reports the unlocked read.
func TestKillRacesFinish(t *testing.T) {
	for range 50 {
		init, initExited := victim(t)
		fd, err := unix.PidfdOpen(init.Process.Pid, 0)
		if err != nil {
			t.Skipf("no pidfd_open: %v", err)
		}
		s := finishedSeal(t, init.Process.Pid, fd)
		other, otherExited := victim(t)
		var wg sync.WaitGroup
		wg.Go(func() {
			// init exits and is reaped; the freed fd number is reused.
			init.Process.Kill()
			<-initExited
			s.finish(errors.New("killed"))
			if fd2, err := unix.PidfdOpen(other.Process.Pid, 0); err == nil {
				t.Cleanup(func() { unix.Close(fd2) })
			}
		})
		wg.Go(s.Kill)
		wg.Wait()
		if sig := signalledFirst(t, other, otherExited); sig != syscall.SIGTERM {
			t.Fatalf("a Kill racing finish killed another process (%v)", sig)
		}
	}
}

// TestInitSendLogsFailure: init says when it cannot tell the runner
// something. On main writeMsg's error was dropped.
func TestInitSendLogsFailure(t *testing.T) {
	ctl, peer := unixPair(t, unix.SOCK_STREAM)
	peer.Close()
	var log syncBuffer
	in := &initProc{log: slog.New(slog.NewTextHandler(&log, nil)), ctl: ctl}
	if err := in.send(Message{Type: "ready"}); err == nil {
		t.Fatal("send to a runner that is gone: no error")
	}
	if !bytes.Contains([]byte(log.String()), []byte("tell the runner")) {
		t.Fatalf("not logged: %q", log.String())
	}
}

// egressInit is the egress half of an init whose runner never answers
// (runner is its end of the socket), serving one port on 127.0.0.1.
func egressInit(t *testing.T, wait time.Duration) (in *initProc, runner *net.UnixConn, addr string) {
	t.Helper()
	eg, runner := unixPair(t, unix.SOCK_SEQPACKET)
	in = &initProc{log: slog.New(slog.NewTextHandler(t.Output(), nil)), egress: eg,
		waiters: map[uint64]chan egressResult{}, egressDone: make(chan struct{}), egressWait: wait}
	go in.readEgressReplies()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go in.serveEgressPort(ln, 5432)
	return in, runner, ln.Addr().String()
}

// closedWithin dials addr and wants the connection closed by init
// within d (a read sees EOF), then no waiter left behind.
func closedWithin(t *testing.T, in *initProc, addr string, d time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(d))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("egress connection with no answer from the runner: read %v, want EOF (closed) within %s", err, d)
	}
	in.waitersM.Lock()
	defer in.waitersM.Unlock()
	if len(in.waiters) != 0 {
		t.Fatalf("%d egress waiters left behind", len(in.waiters))
	}
}

// TestEgressWaitEnds: an egress connection whose request the runner never
// answers is closed after egressWait, and one whose request cannot be sent
// at once; neither leaves its waiter behind. On main the first waited
// forever and the second left its entry in the map.
func TestEgressWaitEnds(t *testing.T) {
	t.Run("no answer", func(t *testing.T) {
		in, runner, addr := egressInit(t, 300*time.Millisecond)
		closedWithin(t, in, addr, 5*time.Second)
		// A reply after init gave up finds no waiter.
		b := []byte(`{"id":1,"error":"late"}`)
		if _, _, err := runner.WriteMsgUnix(b, nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("runner gone", func(t *testing.T) {
		in, runner, addr := egressInit(t, time.Hour)
		runner.Close()
		closedWithin(t, in, addr, 5*time.Second)
	})
}
