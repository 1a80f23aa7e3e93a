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
	"net"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
)

// Job is what a backend needs to start one session's runner.
type Job struct {
	// ID is the session's id.
	ID string
	// Spec is the runner's JSON spec.
	Spec []byte
	// Owner is the Unix account the runner runs as (a batch job is
	// submitted as this account). Empty: the gateway's own.
	Owner string
	// User is the portal user the session is for. Portal users may share
	// one Owner (a gateway without root, a run_as without {user}), so
	// what must be each user's own (a home volume) goes by User.
	User string
	// Profile is the profile's name; CPUs, MemoryMB and Lifetime are what
	// the session was granted (a batch job asks the scheduler for them).
	Profile  string
	CPUs     int
	MemoryMB int
	Lifetime time.Duration
	// Env is given to the runner in its environment, never on a command
	// line: secrets such as the ticket key and the registration token.
	Env map[string]string
}

// Event is what a backend learns about a session's runner: the runner's
// own event type (contract.Event), so a backend passes on what the runner
// said without a second declaration to drift. Kind is queued (with Reason:
// the scheduler's), starting, ready (with Endpoints and TLSSHA256) or exit
// (with Reason and Code).
type Event = contract.Event

// ErrGone means the backend knows nothing (any more) of a session's runner.
var ErrGone = errors.New("runner is gone")

// ErrRefused wraps a registration a Remote backend will not accept (wrong
// node, wrong job, bad ports): a final answer. Any other Register error is
// a fault (the scheduler did not answer) that the runner should retry.
var ErrRefused = errors.New("registration refused")

// Backend starts, watches and stops runners.
type Backend interface {
	// Name is "local", "slurm", ...
	Name() string
	// Start launches `airlock run` for job, and returns the backend's
	// reference to it (a pid, a job id), which the gateway stores so it can
	// re-attach after a restart.
	Start(ctx context.Context, job Job) (ref string, err error)
	// Watch sends the runner's events, from its start (so re-attaching
	// replays what was missed), until and including "exit"; then it closes
	// the channel. It also closes it when ctx ends. A runner that vanished
	// without saying why produces an "exit" whose Reason says so.
	Watch(ctx context.Context, id, ref string) (<-chan Event, error)
	// Stop asks the runner to end the session; Watch reports the exit.
	Stop(ctx context.Context, id, ref string) error
}

// Remote is a backend whose runners run on other machines and report to the
// gateway over HTTPS (registration), not through the backend: their
// connectors listen on TCP and each session starts queued.
type Remote interface {
	Backend
	// Register checks a runner's registration of session id (whose
	// backend reference is ref) made from address from, and returns the
	// "ready" event with the endpoints the gateway may dial: only on the
	// node the backend says the session runs on, whatever the runner
	// claims.
	Register(ctx context.Context, id, ref string, from net.IP, reg registration.Registration) (Event, error)
	// Runners lists the sessions the backend has runners for (by id, with
	// their refs), so the gateway can end runners its store does not know
	// and sessions whose runners are gone.
	Runners(ctx context.Context) (map[string]string, error)
}

// ErrTaken says a job is already a session's: it cannot be adopted twice.
var ErrTaken = errors.New("the job is already a session's")

// Adopter is a backend that can take over a job its user already runs (an
// Open OnDemand session's Slurm job), so that job's runner registers as
// the gateway's own jobs do and Watch, Stop and Runners treat it the same.
type Adopter interface {
	Remote
	// Adopt makes the scheduler's job jobID session id's, after checking
	// that it is queued or running and belongs to account (the session's
	// Unix account; "" is the gateway's own). A job that is not account's is ErrRefused; one the
	// scheduler does not know, or that has ended, is ErrGone; one that is
	// already a session's (any gateway's of this prefix) is ErrTaken.
	Adopt(ctx context.Context, id, jobID, account string) (Adoption, error)
	// Unadopt gives job jobID, adopted for session id, back the name it
	// had before (Adoption.Name), if it still has session id's: for an
	// adoption the gateway could not record, so the job stays the user's
	// and no gateway takes it for one of its own to cancel.
	Unadopt(ctx context.Context, id, jobID, name string) error
}

// Adoption is an adopted job: its backend reference, and how long the
// scheduler will still let it run (0: no limit known).
type Adoption struct {
	Ref      string
	TimeLeft time.Duration
	// Name is the job's name before the adoption renamed it (Unadopt's).
	Name string
}
