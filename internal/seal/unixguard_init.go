package seal

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// The unix guard is a WorkloadThreadHook: it runs on the workload
// spawner's thread, whose capabilities are gone and whose no_new_privs and
// Landlock domain are set, so the filter it installs there is inherited by
// the workload and the helpers and by nothing else of init.
func init() { workloadThreadHooks = append(workloadThreadHooks, unixGuardHook) }

// unixGuardHook installs the filter and starts init's supervisor for it.
// Without a filter (an old kernel, another arch) the session still starts,
// with a warning: host pathname sockets are then reachable from inside.
func unixGuardHook(p *Plan) ([]string, error) {
	ids, err := privateMountIDs()
	var devs map[uint64]uint32
	if err == nil {
		devs, err = mountDevs(ids)
	}
	if err == nil {
		var fd int
		if fd, err = installUnixGuard(p.UnixDatagram); err == nil {
			// Init connects with the owner's ids: its own when it already
			// is the owner (unprivileged), else on threads that take them
			// (root mode).
			policy := unixGuardPolicy{privateMounts: ids, mountDevs: devs, listed: p.UnixSockets,
				switchCreds: os.Geteuid() != p.UID, uid: p.UID, gid: p.GID, groups: p.Groups,
				ready: make(chan struct{})}
			go serveUnixGuard(context.Background(), fd, policy, initLogger(p))
			// The listed sockets the workload could replace are pinned
			// before it starts.
			<-policy.ready
			if p.UnixDatagram {
				return []string{"UNIX datagram sockets are allowed in this session (QEMU's SMB server needs them): a datagram sent to a host socket's path is not refused"}, nil
			}
			return nil, nil
		}
	}
	return []string{fmt.Sprintf("host UNIX sockets outside the seal's /tmp, /run, /var/tmp and /dev/shm stay reachable from inside: %v", err)}, nil
}

// initLogger is init's logger as RunInit makes it, for code that runs
// before initProc exists.
func initLogger(p *Plan) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if p.LogJSON {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	return slog.New(h).With("component", "seal-init", "session", p.ID)
}
