// Package backend defines where a session's runner runs. The gateway
// depends only on the Backend interface; local/ starts `airlock run` on
// this machine, and a Slurm backend (a batch job) and a Kubernetes backend
// (a pod) fit the same shape. A backend never runs a session in-process and
// never imports the gateway or the runner: the runner is a separate process
// (or job) that outlives a gateway restart.
package backend

import (
	"context"
	"errors"
)

// Event is what a backend learns about a session's runner.
type Event struct {
	// Kind is "queued" (with Reason: the scheduler's), "starting", "ready"
	// (with Endpoints and TLSSHA256) or "exit" (with Reason and Code).
	Kind      string
	Endpoints map[string]string
	TLSSHA256 string
	Node      string
	Reason    string
	Code      int
}

// ErrGone means the backend knows nothing (any more) of a session's runner.
var ErrGone = errors.New("runner is gone")

// Backend starts, watches and stops runners.
type Backend interface {
	// Name is "local", "slurm", ...
	Name() string
	// Start launches `airlock run` with spec (the runner's JSON spec) for
	// session id, and returns the backend's reference to it (a pid, a job
	// id), which the gateway stores so it can re-attach after a restart.
	Start(ctx context.Context, id string, spec []byte) (ref string, err error)
	// Watch sends the runner's events, from its start (so re-attaching
	// replays what was missed), until and including "exit"; then it closes
	// the channel. It also closes it when ctx ends. A runner that vanished
	// without saying why produces an "exit" whose Reason says so.
	Watch(ctx context.Context, id, ref string) (<-chan Event, error)
	// Stop asks the runner to end the session; Watch reports the exit.
	Stop(ctx context.Context, id, ref string) error
}
