package seal

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Role says what a process's exit means for the session.
type Role string

const (
	// Workload is the session's main process: its exit ends the session.
	Workload Role = "workload"
	// Connector is a way in: its exit ends the session too, since a seal
	// nobody can reach is useless.
	Connector Role = "connector"
	// Helper is any other process (an xterm in a desktop); its exit is logged.
	Helper Role = "helper"
)

// Process is one program init starts inside the seal.
type Process struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Argv is the command line. Argv[0] is looked up in PATH (from Env)
	// unless Self is set, in which case the airlock binary is run with Argv
	// as its arguments.
	Argv []string `json:"argv"`
	Self bool     `json:"self,omitempty"`
	// Env is the exact environment; nothing is inherited from the runner.
	Env []string `json:"env"`
	Dir string   `json:"dir,omitempty"`
	// Listener is the index in Config.Listeners of the listener this process
	// inherits as fd 3, or -1 for none.
	Listener int `json:"listener"`
	// Secret, when set, is written to a pipe the process inherits as the
	// next descriptor (4 with a listener, 3 without), then the pipe is
	// closed. Secrets never go on a command line or in the environment.
	Secret []byte `json:"secret,omitempty"`
	// Essential (helpers only) makes the helper's exit end the session,
	// as the workload's does: a kiosk's browser, whose window closing
	// must close the session.
	Essential bool `json:"essential,omitempty"`
}

// Bind is a host directory mounted read-only over Target inside the seal.
// Target must exist.
type Bind struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// Plan is what the parent tells init to do. It travels over the control
// socket, never on a command line.
type Plan struct {
	ID string `json:"id"`
	// RootMode: init runs as real root (no user namespace) and starts every
	// process as UID/GID/Groups. Otherwise init already is the owner inside a
	// user namespace and only drops its capabilities.
	RootMode bool `json:"root_mode"`
	// Unsealed: init runs in no namespace of its own (Config.PodFallback).
	// It mounts nothing, brings no lo up, and ends the session by
	// signalling its descendants, not every process it can see.
	Unsealed bool  `json:"unsealed,omitempty"`
	UID      int   `json:"uid"`
	GID      int   `json:"gid"`
	Groups   []int `json:"groups,omitempty"`
	// ScratchDir is a host directory bind-mounted on /tmp inside.
	ScratchDir string `json:"scratch_dir"`
	// Hide are host paths masked inside (Config.Hide).
	Hide []string `json:"hide,omitempty"`
	// TTYGID is the group new pseudo-terminals get (the tty group), or -1 when
	// that group is not mapped in the user namespace.
	TTYGID       int           `json:"tty_gid"`
	Processes    []Process     `json:"processes"`
	Probes       []string      `json:"probes,omitempty"`
	EgressPorts  []int         `json:"egress_ports,omitempty"`
	ReadyTimeout time.Duration `json:"ready_timeout"`
	Grace        time.Duration `json:"grace"`
	LogJSON      bool          `json:"log_json,omitempty"`
	// UnixSockets are host pathname sockets the workload may connect to
	// (Config.UnixSockets).
	UnixSockets []string `json:"unix_sockets,omitempty"`
	// Binds are read-only bind mounts (Config.Binds).
	Binds []Bind `json:"binds,omitempty"`
	// UnixDatagram lets the workload make UNIX datagram sockets
	// (Config.UnixDatagram).
	UnixDatagram bool `json:"unix_datagram,omitempty"`
}

// Message is one line on the control socket.
type Message struct {
	Type string `json:"type"` // plan, stop (parent→init); ready, exit, error (init→parent)
	Plan *Plan  `json:"plan,omitempty"`
	// Reason and Code describe an exit or a setup error.
	Reason string `json:"reason,omitempty"`
	Code   int    `json:"code,omitempty"`
	// Warnings are things init could not do but carried on without.
	Warnings []string `json:"warnings,omitempty"`
}

// EgressRequest asks the parent to dial the egress target for Port.
type EgressRequest struct {
	ID   uint64 `json:"id"`
	Port int    `json:"port"`
}

// EgressReply answers an EgressRequest; on success the dialled socket
// travels with it as SCM_RIGHTS.
type EgressReply struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

// maxMessage bounds one control line; a plan with a few PEM files is far
// below it.
const maxMessage = 4 << 20

type msgReader struct{ sc *bufio.Scanner }

func newMsgReader(r io.Reader) *msgReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxMessage)
	return &msgReader{sc: sc}
}

func (m *msgReader) read() (Message, error) {
	if !m.sc.Scan() {
		if err := m.sc.Err(); err != nil {
			return Message{}, fmt.Errorf("read control message: %w", err)
		}
		return Message{}, io.EOF
	}
	var msg Message
	if err := json.Unmarshal(m.sc.Bytes(), &msg); err != nil {
		return Message{}, fmt.Errorf("decode control message: %w", err)
	}
	return msg, nil
}

func writeMsg(w io.Writer, m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode control message: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write control message: %w", err)
	}
	return nil
}
