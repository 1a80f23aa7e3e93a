// Package connector owns the processes that sit inside a session's seal and
// bridge connections arriving on an inherited listener to the workload on
// loopback. It provides one entry point, [Serve], and four kinds:
//
//   - "vnc": WebSocket (RFC 6455) to an RFB server (RFC 6143) such as Xvnc or
//     QEMU's VNC display. A ticket admits each WebSocket. In view mode the
//     connector terminates the RFB security handshake itself and filters the
//     client's messages so that no input reaches the server (rfb.go). With
//     Config.VNCPassword set it answers the server's VncAuth challenge
//     itself, so users never see the VNC password. In control mode it checks
//     the start of the client's handshake before relaying it. Every viewer
//     comes from the connector's one address, so a server that blacklists
//     addresses (TigerVNC) must run with that off (-BlacklistTimeout 0).
//   - "http": a reverse proxy for web apps (Jupyter, code-server), WebSockets
//     included. A ticket is exchanged once for an HttpOnly cookie; the app
//     never sees either.
//   - "tls": mutual TLS to plain TCP, for native RDP clients (like stunnel).
//     The per-session client certificate is the credential; there is no
//     ticket.
//   - "rnode": the http kind's proxy in plain HTTP for Open OnDemand's
//     /rnode/HOST/PORT/ proxy (rnode.go). A per-session secret, posted once,
//     is exchanged for an HttpOnly cookie scoped to the session's path;
//     there is no ticket.
//
// # What it must not do
//
// A connector never calls listen: the runner binds the listener outside the
// seal and hands it over, and Serve only accepts on it. A connector trusts
// nothing a peer says until a ticket (vnc, http), a client certificate
// (tls) or the session's secret (rnode) has been verified, and it fails
// closed: a request it cannot classify is refused and logged, never passed
// on. It does not import the gateway
// side (gateway, store, auth, config) and knows nothing of users beyond the
// name a ticket or certificate carries.
package connector
