package seal

import (
	"context"
	"os"
	"runtime"
)

type spawnReq struct {
	p    Process
	done chan error
}

// startUnixGuard starts the thread that starts the workload and the
// helpers: it carries the unix guard's filter, which everything it forks
// inherits, while init's other threads (the supervisor among them) and
// the connectors run without it. Without a filter (an old kernel, another
// arch) the session still starts, with a warning: host pathname sockets
// are then reachable from inside.
func (in *initProc) startUnixGuard() {
	p := in.plan
	// Init connects with the owner's ids: its own when it already is the
	// owner (unprivileged), else on threads that take them (root mode).
	policy := unixGuardPolicy{listed: p.UnixSockets, switchCreds: os.Geteuid() != p.UID, uid: p.UID, gid: p.GID, groups: p.Groups}
	ids, idsErr := privateMountIDs()
	policy.privateMounts = ids
	in.spawn = make(chan spawnReq)
	installed := make(chan error, 1)
	go func() {
		// Never unlocked: the thread keeps its filter and no_new_privs and
		// ends with init.
		runtime.LockOSThread()
		if idsErr != nil {
			installed <- idsErr
		} else if fd, err := installUnixGuard(); err != nil {
			installed <- err
		} else {
			go serveUnixGuard(context.Background(), fd, policy, in.log)
			installed <- nil
		}
		for r := range in.spawn {
			r.done <- in.start(r.p)
		}
	}()
	if err := <-installed; err != nil {
		in.warn("host UNIX sockets outside the seal's /tmp, /run, /var/tmp and /dev/shm stay reachable from inside: %v", err)
		return
	}
	in.log.Info("unix guard on", "listed", p.UnixSockets)
}

// startProc starts p: the workload and helpers on the guarded thread,
// connectors directly (they hold the way in and never connect out).
func (in *initProc) startProc(p Process) error {
	if p.Role == Connector || in.spawn == nil {
		return in.start(p)
	}
	r := spawnReq{p: p, done: make(chan error, 1)}
	in.spawn <- r
	return <-r.done
}
