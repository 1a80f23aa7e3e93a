package contract

import (
	"slices"
	"strings"
)

// ConnectorKind names what a connector speaks; see Kinds.
type ConnectorKind string

// The registered connector kinds.
const (
	// KindVNC is WebSocket to an RFB server (Xvnc, QEMU's display).
	KindVNC ConnectorKind = "vnc"
	// KindHTTP is a reverse proxy to a web application.
	KindHTTP ConnectorKind = "http"
	// KindTLS is mutual TLS to plain TCP, for native clients (RDP).
	KindTLS ConnectorKind = "tls"
	// KindRNode is a reverse proxy to a web application in plain HTTP,
	// for Open OnDemand's /rnode/HOST/PORT/ proxy (which speaks plain HTTP
	// to nodes): it admits the holder of a per-session secret
	// (ConnectorSpec.SecretEnv) and no one else. A desktop is served to it
	// by noVNC under websockify inside the seal.
	KindRNode ConnectorKind = "rnode"
)

// MinSecretLen is the shortest per-session secret a Secret kind takes: 32
// characters of OnDemand's create_passwd alphabet (62 symbols) are about
// 190 bits, beyond guessing through a proxy.
const MinSecretLen = 32

// View is how the gateway offers a connector to a browser.
type View string

const (
	// ViewVNC: the session page opens a VNC viewer on the connector's
	// WebSocket.
	ViewVNC View = "vnc"
	// ViewApp: the session page opens the connector's web application.
	ViewApp View = "app"
	// ViewNone: not reachable from a browser (native clients only).
	ViewNone View = "none"
)

// KindInfo is everything the two sides need to know about a connector
// kind besides the code that serves it.
type KindInfo struct {
	Kind ConnectorKind
	// Tickets: each connection carries a gateway ticket, so the spec must
	// give the ticket key (ticket_key_file or ticket_key_env).
	Tickets bool
	// ClientCerts: clients present certificates signed by the session's
	// CA, so the spec must give tls.cert_file, tls.key_file and
	// tls.client_ca_file, and the connector gets the CA.
	ClientCerts bool
	// VNCPassword: the connector may answer the target's VNC password
	// challenge itself (vnc_password_file).
	VNCPassword bool
	// Wait is the default of ConnectorSpec.Wait: whether the session is
	// ready only once the target accepts connections.
	Wait bool
	// View is how the gateway offers it to a browser.
	View View
	// Secret: clients present a per-session secret that the job gives the
	// runner in ConnectorSpec.SecretEnv (Open OnDemand's connection.yml
	// way), exchanged once for an HttpOnly cookie.
	Secret bool
	// PlainTCP: the kind may listen on TCP without TLS. Only for a kind
	// whose front end cannot speak TLS to nodes (OnDemand's proxy); the
	// README says what that exposes.
	PlainTCP bool
}

// kinds is the registry. Keep it in the order the kinds are documented.
var kinds = []KindInfo{
	{Kind: KindVNC, Tickets: true, VNCPassword: true, Wait: true, View: ViewVNC},
	{Kind: KindHTTP, Tickets: true, Wait: true, View: ViewApp},
	{Kind: KindTLS, ClientCerts: true, Wait: false, View: ViewNone},
	// The gateway never offers an rnode connector: OnDemand's session card
	// links to it.
	{Kind: KindRNode, Secret: true, PlainTCP: true, Wait: true, View: ViewNone},
}

// Lookup returns the registry's entry for k.
func Lookup(k ConnectorKind) (KindInfo, bool) {
	i := slices.IndexFunc(kinds, func(ki KindInfo) bool { return ki.Kind == k })
	if i < 0 {
		return KindInfo{}, false
	}
	return kinds[i], true
}

// Kinds lists the registered kinds.
func Kinds() []ConnectorKind {
	out := make([]ConnectorKind, len(kinds))
	for i, k := range kinds {
		out[i] = k.Kind
	}
	return out
}

// KindList is the registered kinds for an error message: "vnc, http, tls or rnode".
func KindList() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k.Kind)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// WaitFor is whether the session waits for c's target: c.Wait when set,
// else its kind's default.
func (c ConnectorSpec) WaitFor() bool {
	if c.Wait != nil {
		return *c.Wait
	}
	k, _ := Lookup(c.Kind)
	return k.Wait
}

// The connectors the gateway names in the specs it builds. A session's
// endpoints, tickets and URLs (/s/ID/NAME/) use these names.
const (
	// ConnConsole is a desktop's or a VM's screen (a vnc connector).
	ConnConsole = "console"
	// ConnApp is an app profile's web application (an http connector).
	ConnApp = "app"
)
