package seal

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// A spawner owns one OS thread and starts processes from it, and only from
// it.
//
// Capabilities, securebits, no_new_privs and the Landlock domain are
// attributes of a thread, and a child inherits those of the thread that
// forked it. Init is a Go program with many threads, and syscall.ForkExec
// forks from whichever thread its goroutine happens to run on, so a prctl
// on "init" reaches one thread and a child forked from another keeps
// everything (issue 9, items 1 and 8). A spawner's goroutine locks itself
// to its thread before changing anything and never unlocks: no other
// goroutine ever runs on that thread, the runtime never clones a new
// thread from a locked one (it asks its template thread instead), and if
// the goroutine ended, the thread would end with it rather than return to
// the pool with odd credentials. No AllThreadsSyscall is needed, so a cgo
// build works too.
type spawner struct {
	name string
	reqs chan spawnReq
}

type spawnReq struct {
	path  string
	argv  []string
	attr  *syscall.ProcAttr
	reply chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

// newSpawner starts a spawner whose thread runs setup first; the spawner is
// usable only if setup succeeded. setup's warnings are returned.
func newSpawner(name string, setup func() ([]string, error)) (*spawner, []string, error) {
	s := &spawner{name: name, reqs: make(chan spawnReq)}
	type setupResult struct {
		warnings []string
		err      error
	}
	ready := make(chan setupResult, 1)
	goOffMainThread(func() {
		w, err := setup()
		ready <- setupResult{w, err}
		if err != nil {
			// Returning while locked ends this thread and its half-made
			// credentials with it.
			return
		}
		for r := range s.reqs {
			pid, err := syscall.ForkExec(r.path, r.argv, r.attr)
			r.reply <- spawnResult{pid, err}
		}
	})
	res := <-ready
	if res.err != nil {
		return nil, res.warnings, fmt.Errorf("%s spawner: %w", name, res.err)
	}
	return s, res.warnings, nil
}

// goOffMainThread runs f on a new goroutine locked for good to an OS
// thread other than the main one, so f may change that thread's
// credentials. The main thread's credentials (and Landlock domain) are the
// ones kill(2), ptrace and /proc judge the process by: it must never be
// confined, nor take another uid. If f returns, its thread ends with it.
func goOffMainThread(f func()) {
	go func() {
		runtime.LockOSThread() // never unlocked unless on the main thread
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		// While this goroutine holds the main thread, the next one cannot
		// run on it; let go once that one has a thread of its own.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread() // never unlocked
			close(locked)
			f()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// forkExec starts argv from the spawner's thread.
func (s *spawner) forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	reply := make(chan spawnResult, 1)
	s.reqs <- spawnReq{path: path, argv: argv, attr: attr, reply: reply}
	r := <-reply
	return r.pid, r.err
}

// stop ends the spawner; its thread ends with it.
func (s *spawner) stop() { close(s.reqs) }

// setupConnectorThread is the connector spawner's setup: no capabilities
// (but those root needs to switch a child to the owner), no_new_privs.
func (in *initProc) setupConnectorThread() ([]string, error) {
	return confineThread(in.plan.Unsealed, in.ownerSwitchCaps()...)
}

// ownerSwitchCaps are the capabilities a spawner keeps so its children can
// switch to the owner's ids: none unless init is real root.
func (in *initProc) ownerSwitchCaps() []uintptr {
	if in.plan.RootMode {
		return []uintptr{unix.CAP_SETUID, unix.CAP_SETGID}
	}
	return nil
}
