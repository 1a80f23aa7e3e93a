package contract

// EventKind is what happened to a session's runner.
type EventKind string

// The events, in the order a session goes through them.
const (
	// EventQueued: the scheduler holds the job (Reason says why). Only a
	// remote backend reports it.
	EventQueued EventKind = "queued"
	// EventStarting: the job runs on Node; the runner is making the seal.
	EventStarting EventKind = "starting"
	// EventReady: the connectors answer at Endpoints, presenting the
	// certificate whose SHA-256 is TLSSHA256.
	EventReady EventKind = "ready"
	// EventExit: the session ended, with Reason and Code. The last event.
	EventExit EventKind = "exit"
	// EventEgress: a kiosk's egress proxy let a connection to Target
	// through (Verdict "allow") or refused it ("refuse", Reason says
	// why). Any number, between ready and exit; the gateway audits each.
	EventEgress EventKind = "egress"
)

// Event is one thing a runner reports: a JSON line on the runner's stdout
// (the local backend reads them from its event file) and what every
// backend sends the gateway.
type Event struct {
	Kind EventKind `json:"event"`
	// ID is the session's id (the runner's lines carry it).
	ID string `json:"id,omitempty"`
	// Node is where the runner runs, as the backend knows it (not the
	// runner's word).
	Node string `json:"node,omitempty"`
	// Endpoints are the connectors' addresses, by connector name (ready).
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// TLSSHA256 is the SHA-256 (hex) of the session certificate the TCP
	// connectors present, for pinning (ready).
	TLSSHA256 string `json:"tls_sha256,omitempty"`
	// IDMap says how the user namespace maps ids: none (root), subordinate
	// or single (ready).
	IDMap    string   `json:"id_map,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Accel is how a VM session's guest runs: kvm or tcg (ready).
	Accel  string `json:"accel,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Target and Verdict describe an egress event: the HOST:PORT asked
	// for and "allow" or "refuse".
	Target  string `json:"target,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	// Code is the runner's exit code (exit): the workload's, 0 when the
	// session was stopped, 1 when it could not start, -1 when the backend
	// lost the runner without its word. Always written, so an exit's 0 is
	// there to read.
	Code int `json:"code"`
}

// ConnectorSecrets is what a connector started by the runner reads from
// its --secrets-fd: everything it must know but nobody may see in ps.
type ConnectorSecrets struct {
	TicketKey   string `json:"ticket_key,omitempty"` // hex
	CertPEM     string `json:"cert_pem,omitempty"`
	KeyPEM      string `json:"key_pem,omitempty"`
	ClientCAPEM string `json:"client_ca_pem,omitempty"`
	VNCPassword string `json:"vnc_password,omitempty"`
	// Secret is an rnode connector's per-session secret.
	Secret string `json:"secret,omitempty"`
}
