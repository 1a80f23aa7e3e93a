package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/rdpfilter"
	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// RDP in the browser (issue 12).
//
//	IronRDP (WASM, in the page) ──WebSocket /rdp/{id}, RDCleanPath──▶ gateway
//	  ──mTLS (hop CA)──▶ session's tls connector ──▶ xrdp / the guest's RDP, 127.0.0.1:3389
//
// The page asks POST /api/v1/sessions/{id}/rdp-ticket for a ticket (the
// owner only; 60 s, single use, signed with a key only the gateway holds)
// and hands it to the client, which sends it as the RDCleanPath request's
// proxy_auth. The gateway routes by the ticket alone: the WebSocket's path
// and the request's destination must name the ticket's session, or the
// request is refused. It forwards the client's X.224 Connection Request,
// reads the Confirm, does the TLS handshake with the RDP server itself and
// answers with the Confirm and the server's certificate chain; from then
// on the client's TLS-protected RDP (CredSSP included, so the gateway never
// sees a Windows password) travels in the clear between the WebSocket and
// the gateway's TLS to the server, through the channel filter.

// rdpWebConnector is the connector name in a browser RDP ticket. No
// connector has that name, and the ticket key is the gateway's alone, so
// such a ticket opens nothing but this endpoint.
const rdpWebConnector = "rdp-browser"

// rdpWebTicketTTL is how long the page has to open the WebSocket.
const rdpWebTicketTTL = 60 * time.Second

// rdpWebState is the gateway's memory of spent browser RDP tickets.
type rdpWebState struct {
	replay ticket.ReplayGuard
}

func (g *Gateway) rdpWebKey() ticket.Key {
	return ticket.Key(derive(g.master, "airlock browser rdp ticket key", ""))
}

type rdpTicketJSON struct {
	Ticket      string    `json:"ticket"`
	Path        string    `json:"path"`
	Destination string    `json:"destination"`
	Expires     time.Time `json:"expires"`
}

// createRDPTicket answers POST /api/v1/sessions/{id}/rdp-ticket: a ticket
// for the browser's RDP client to the caller's own session.
func (g *Gateway) createRDPTicket(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	s, err := g.ownSession(r, id, false)
	if err != nil {
		return err
	}
	if _, ok := s.Endpoints[ConnRDP]; !ok || g.rdp == nil {
		return apiErr(409, "no_rdp", fmt.Sprintf("session %s serves no RDP", s.ID))
	}
	if s.State != session.Ready {
		return apiErr(409, "not_ready", fmt.Sprintf("session %s is %s", s.ID, s.State))
	}
	exp := g.now().Add(rdpWebTicketTTL)
	tok, err := ticket.Sign(g.rdpWebKey(), ticket.Claims{Session: s.ID, Connector: rdpWebConnector, User: id.user,
		Mode: ticket.Mode(session.Control), Expires: exp})
	if err != nil {
		return fmt.Errorf("rdp ticket: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, 201, rdpTicketJSON{Ticket: tok, Path: "/rdp/" + s.ID, Destination: s.ID, Expires: exp.UTC()})
	return nil
}

// rdpRefusal is one way a browser RDP connection is refused before any
// RDP byte reaches the server: the PDU the client gets and what the log
// and the audit say.
type rdpRefusal struct {
	pdu *rdcleanpath.PDU
	why string
	err error
}

func refuseHTTP(status int, why string, err error) *rdpRefusal {
	return &rdpRefusal{pdu: rdcleanpath.HTTPError(status), why: why, err: err}
}

// serveRDPWeb is GET /rdp/{id}: the RDCleanPath WebSocket.
func (g *Gateway) serveRDPWeb(w http.ResponseWriter, r *http.Request) {
	if !isWebSocket(r) {
		writeErr(w, apiErr(400, "not_websocket", "this is the browser RDP client's WebSocket"))
		return
	}
	// coder/websocket refuses an Origin other than the gateway's own
	// host: another site's page cannot ride the user's cookie here.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		g.log.WarnContext(r.Context(), "rdp (browser): refused WebSocket", "remote_addr", r.RemoteAddr, "error", err)
		return
	}
	c.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(g.ctx)
	defer cancel()
	ws := websocket.NetConn(ctx, c, websocket.MessageBinary)
	defer ws.Close()
	remote := r.RemoteAddr

	ws.SetDeadline(time.Now().Add(15 * time.Second))
	up, tag, resp, policy, record, ref := g.rdpWebAdmit(ctx, r, ws)
	var rec *rdpRecorder
	if ref == nil && record {
		// A profile that must be recorded is not viewed unrecorded.
		var err error
		if rec, err = g.startRDPRecording(tag, resp, remote); err != nil {
			up.Close()
			ref = refuseHTTP(503, "recording unavailable", err)
		}
	}
	if ref != nil {
		attrs := []any{"remote_addr", remote, "reason", ref.why, "answer", describeRefusal(ref.pdu)}
		if tag.User != "" {
			attrs = append(attrs, "user", tag.User, "session", tag.Session)
		}
		if ref.err != nil {
			attrs = append(attrs, "error", ref.err)
		}
		g.log.WarnContext(ctx, "rdp (browser): refused", attrs...)
		g.audit(ctx, cmp.Or(tag.User, "-"), "rdp_refused", tag.Session, remote, "browser: "+ref.why)
		if b, err := ref.pdu.Marshal(); err == nil {
			ws.Write(b)
		}
		return
	}
	defer up.Close()
	if rec != nil {
		defer rec.close()
	}
	b, err := resp.Marshal()
	if err == nil {
		_, err = ws.Write(b)
	}
	if err != nil {
		g.log.WarnContext(ctx, "rdp (browser): answer not sent", "session", tag.Session, "user", tag.User, "error", err)
		return
	}
	ws.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})

	defer g.track(tag, cancel)()
	defer g.viewerStart(tag.Session)()
	g.audit(ctx, tag.User, "connect", tag.Session, remote, "rdp (browser)")
	g.log.InfoContext(ctx, "rdp (browser): connected", "session", tag.Session, "user", tag.User, "remote_addr", remote)
	start := time.Now()
	f := rdpfilter.New(policy)
	blocks := &rdpClipAudit{g: g, ctx: ctx, tag: tag, remote: remote}
	f.OnBlock = blocks.add
	client := &rdpFilterConn{Conn: ws, feed: f.Feed, tap: rdpWebTap, in1: "client", out1: "relayed"}
	server := &rdpFilterConn{Conn: up, feed: f.FeedServer, tap: rdpWebTap, in1: "server"}
	if rec != nil {
		rec.f = f
		server.feed = rec.feed
	}
	stats, err := relay.Pipe(ctx, client, server, 0)
	attrs := []any{"session", tag.Session, "user", tag.User, "remote_addr", remote,
		"bytes_in", stats.AToB, "bytes_out", stats.BToA, "duration", time.Since(start),
		"channels", f.Channels, "channels_blocked", f.Blocked, "info_password_blanked", f.PasswordBlanked}
	if n := blocks.total(); n > 0 {
		attrs = append(attrs, "clipboard_blocked", n)
	}
	if policy.NLA && !f.Connected() {
		// The server hung up inside CredSSP: how FreeRDP's shadow
		// server refuses a wrong password (the page says so too).
		attrs = append(attrs, "nla_logon", "ended inside CredSSP (a refused logon?)")
	}
	if ferr := cmp.Or(client.err, server.err); ferr != nil {
		// The filter ended the connection: a client (or server) doing
		// what an honest one does not, or what cannot be checked.
		g.log.WarnContext(ctx, "rdp (browser): refused", "session", tag.Session, "user", tag.User, "remote_addr", remote,
			"reason", "the channel filter ended the connection", "error", ferr)
		g.audit(ctx, tag.User, "rdp_refused", tag.Session, remote, "browser: "+ferr.Error())
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		attrs = append(attrs, "error", err)
	}
	g.log.InfoContext(ctx, "rdp (browser): disconnected", attrs...)
}

// rdpClipAuditRate caps the audit events of blocked clipboard transfers
// per connection and minute: a page (or a script in the session) that
// keeps copying must not flood the audit log. The rest are counted in the
// disconnect line.
const rdpClipAuditRate = 10

// rdpClipAudit logs and audits the clipboard transfers one browser RDP
// connection's filter blocked.
type rdpClipAudit struct {
	g      *Gateway
	ctx    context.Context
	tag    viewerTag
	remote string

	mu              sync.Mutex
	window          time.Time
	n, dropped, all int
}

func (a *rdpClipAudit) add(b rdpfilter.Block) {
	a.mu.Lock()
	a.all++
	now := a.g.now()
	if now.Sub(a.window) >= time.Minute {
		a.window, a.n = now, 0
	}
	a.n++
	ok := a.n <= rdpClipAuditRate
	if !ok {
		a.dropped++
	}
	a.mu.Unlock()
	if !ok {
		return
	}
	// The filter calls this with its stream locked: the store's write
	// goes on apart from the relay.
	detail := fmt.Sprintf("rdp (browser): clipboard %s %s of %d bytes blocked", b.Direction, b.What, b.Bytes)
	a.g.log.InfoContext(a.ctx, "rdp (browser): clipboard refused", "session", a.tag.Session, "user", a.tag.User,
		"direction", b.Direction, "what", b.What, "bytes", b.Bytes)
	go a.g.audit(a.ctx, a.tag.User, "clipboard_refused", a.tag.Session, a.remote, detail)
}

func (a *rdpClipAudit) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.all
}

// rdpWebAdmit reads the RDCleanPath request and does everything up to the
// answer: who is asking, the ticket, the session, the connector, the X.224
// exchange and the TLS handshake with the RDP server. It returns the TLS
// connection to the server, the answer, the profile's channel policy and
// whether it records, or a refusal.
func (g *Gateway) rdpWebAdmit(ctx context.Context, r *http.Request, ws net.Conn) (net.Conn, viewerTag, *rdcleanpath.PDU, rdpfilter.Policy, bool, *rdpRefusal) {
	var tag viewerTag
	var policy rdpfilter.Policy
	raw, err := rdcleanpath.Read(ws, rdcleanpath.MaxRequest)
	if err != nil {
		return nil, tag, nil, policy, false, refuseHTTP(400, "unreadable RDCleanPath request", err)
	}
	req, err := rdcleanpath.Parse(raw)
	if err != nil {
		return nil, tag, nil, policy, false, refuseHTTP(400, "malformed RDCleanPath request", err)
	}
	if req.ProxyAuth == "" {
		return nil, tag, nil, policy, false, refuseHTTP(401, "no ticket", nil)
	}
	if k := req.Kind(); k != rdcleanpath.KindRequest {
		return nil, tag, nil, policy, false, refuseHTTP(400, "RDCleanPath "+k.String()+" where a request belongs", nil)
	}
	if err := rdcleanpath.CheckRequest(req.X224); err != nil {
		return nil, tag, nil, policy, false, refuseHTTP(400, "bad X.224 Connection Request", err)
	}
	who, err := g.identify(r)
	if err != nil {
		if isStoreFault(err) {
			return nil, tag, nil, policy, false, refuseHTTP(503, "store fault; try again", err)
		}
		return nil, tag, nil, policy, false, refuseHTTP(401, "not logged in", err)
	}
	tag.User = who.user
	now := g.now()
	claims, err := ticket.Check(g.rdpWebKey(), req.ProxyAuth, r.PathValue("id"), rdpWebConnector, now)
	switch {
	case errors.Is(err, ticket.ErrWrongSession):
		return nil, tag, nil, policy, false, refuseHTTP(403, "ticket for another session", err)
	case err != nil:
		return nil, tag, nil, policy, false, refuseHTTP(401, "bad ticket", err)
	}
	tag.Session = claims.Session
	if claims.User != who.user {
		return nil, tag, nil, policy, false, refuseHTTP(403, "another user's ticket", fmt.Errorf("ticket of %q", claims.User))
	}
	if req.Destination != claims.Session {
		// The client's destination is never used to route; one the ticket
		// does not name is someone trying to.
		return nil, tag, nil, policy, false, refuseHTTP(403, "destination the ticket does not name", fmt.Errorf("destination %q", req.Destination))
	}
	if err := g.rdpWeb.replay.Use(claims, now); err != nil {
		return nil, tag, nil, policy, false, refuseHTTP(401, "ticket already used", err)
	}
	if g.spender != nil {
		// Several gateways take the same tickets (one master key): the
		// nonce is spent in the store too, so a ticket used at another
		// gateway is refused here.
		switch err := g.spender.Spend(ctx, "rdp-browser:"+claims.Nonce, now, claims.Expires); {
		case errors.Is(err, store.ErrExists):
			return nil, tag, nil, policy, false, refuseHTTP(401, "ticket already used", err)
		case err != nil:
			// Nothing was spent: the same ticket may try again, here too.
			g.rdpWeb.replay.Release(claims)
			return nil, tag, nil, policy, false, refuseHTTP(503, "store fault; try again", err)
		}
	}
	s, err := g.cfg.Store.GetSession(ctx, claims.Session)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, tag, nil, policy, false, refuseHTTP(404, "no such session", nil)
	case err != nil:
		return nil, tag, nil, policy, false, refuseHTTP(503, "store fault; try again", err)
	case s.Owner != who.user:
		return nil, tag, nil, policy, false, refuseHTTP(403, "not the session's owner", nil)
	case s.State != session.Ready:
		return nil, tag, nil, policy, false, refuseHTTP(409, "session is "+string(s.State), nil)
	}
	endpoint, ok := s.Endpoints[ConnRDP]
	if !ok || g.rdp == nil {
		return nil, tag, nil, policy, false, refuseHTTP(404, "session serves no RDP", nil)
	}
	tag = viewer{user: who.user, mode: session.Control}.tag(s, who)
	prof, _ := g.profile(s.Profile)
	policy = prof.rdpPolicy()

	hop, err := g.dialRDP(ctx, s, endpoint)
	if err != nil {
		return nil, tag, nil, policy, false, refuseHTTP(502, "session's connector unreachable", err)
	}
	up, resp, ref := rdpServerHandshake(hop, req.X224)
	if ref != nil {
		hop.Close()
		return nil, tag, nil, policy, false, ref
	}
	if cc, err := rdcleanpath.ParseConfirm(resp.X224); err == nil && cc.Protocol&(protocolHybrid|protocolHybridEx) != 0 {
		policy.NLA = true
	}
	return up, tag, resp, policy, prof.Record, nil
}

// The RDP security protocols of MS-RDPBCGR 2.2.1.2.1 that run CredSSP.
const (
	protocolHybrid   = 0x2
	protocolHybridEx = 0x8
)

// rdpServerHandshake sends the client's Connection Request to the RDP
// server behind conn, reads its Confirm and does the TLS handshake. The
// server's certificate is not checked here: the client binds CredSSP to
// the public key in the chain it is sent, and the path to the server is
// the session's own mutually authenticated hop.
func rdpServerHandshake(conn net.Conn, cr []byte) (net.Conn, *rdcleanpath.PDU, *rdpRefusal) {
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(cr); err != nil {
		return nil, nil, &rdpRefusal{pdu: rdcleanpath.WSAError(rdcleanpath.WSAEConnRefused), why: "RDP server unreachable", err: err}
	}
	cc, err := rdcleanpath.ReadTPKT(conn, rdcleanpath.MaxX224)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		// The tls connector closes the hop when its target refuses.
		return nil, nil, &rdpRefusal{pdu: rdcleanpath.WSAError(rdcleanpath.WSAEConnRefused), why: "RDP server down (connection refused)", err: err}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, nil, &rdpRefusal{pdu: rdcleanpath.WSAError(rdcleanpath.WSAETimedOut), why: "RDP server did not answer", err: err}
	case err != nil:
		return nil, nil, refuseHTTP(502, "RDP server sent no X.224 Connection Confirm", err)
	}
	conf, err := rdcleanpath.ParseConfirm(cc)
	if err != nil {
		return nil, nil, refuseHTTP(502, "RDP server sent a bad X.224 Connection Confirm", err)
	}
	if conf.Failed {
		return nil, nil, &rdpRefusal{pdu: rdcleanpath.NegotiationFailure(cc), why: fmt.Sprintf("RDP server refused the negotiation (code %d)", conf.FailureCode)}
	}
	if conf.Protocol == 0 {
		// Standard RDP security has no TLS to terminate.
		return nil, nil, refuseHTTP(502, "RDP server chose standard RDP security, not TLS", nil)
	}
	tc := tls.Client(conn, &tls.Config{
		InsecureSkipVerify: true, // see above: the client checks the key through CredSSP
		MinVersion:         tls.VersionTLS12,
	})
	if err := tc.Handshake(); err != nil {
		if a, ok := tlsAlert(err); ok {
			return nil, nil, &rdpRefusal{pdu: rdcleanpath.TLSAlert(a), why: "TLS alert from the RDP server", err: err}
		}
		return nil, nil, refuseHTTP(502, "TLS handshake with the RDP server failed", err)
	}
	var chain [][]byte
	for _, c := range tc.ConnectionState().PeerCertificates {
		chain = append(chain, c.Raw)
	}
	return tc, rdcleanpath.Response(rdpTarget, cc, chain), nil
}

// describeRefusal is a refusal PDU's error in a few words, for the log.
func describeRefusal(p *rdcleanpath.PDU) string {
	e := p.Error
	switch {
	case e.Code == rdcleanpath.NegotiationError:
		return "negotiation error"
	case e.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d", e.HTTPStatus)
	case e.WSALastError != 0:
		return fmt.Sprintf("WSA %d", e.WSALastError)
	case e.TLSAlert != 0:
		return fmt.Sprintf("TLS alert %d", e.TLSAlert)
	}
	return "error"
}

// rdpPolicy is the channel policy of browser RDP sessions of p: the
// clipboard channel out (none), filtered one way (in, out) or whole.
func (p Profile) rdpPolicy() rdpfilter.Policy {
	return rdpfilter.Policy{ClipIn: p.Clipboard.AllowsIn(), ClipOut: p.Clipboard.AllowsOut(), Drives: p.Drives, Xrdp: p.Kind == "desktop" && p.RDPServer != RDPServerShadow}
}

// clipboardWhole reports whether p lets clipboard text cross both ways,
// which is all a native RDP client (TLS end to end) can be held to.
func (p Profile) clipboardWhole() bool { return p.Clipboard.AllowsIn() && p.Clipboard.AllowsOut() }

// rdpFilterConn is one side of a relayed browser RDP connection: what it
// sends passes through the channel filter (feed) on its way to the other
// side. Writes pass unchanged (the other side's filter saw them).
type rdpFilterConn struct {
	net.Conn
	feed    func([]byte) ([]byte, error)
	pending []byte // filtered bytes not yet returned
	in      []byte
	err     error // the filter's refusal, which ended the connection
	// tap, set only by tests (rdpWebTap), sees the bytes read as they
	// came (stage in1) and, if out1 is set, as the filter passed them.
	tap       func(stage string, b []byte)
	in1, out1 string
}

// rdpWebTap, set only by tests, sees every byte the relay holds in the
// clear: the client's as they came ("client") and as the filter passed
// them on ("relayed"), and the server's ("server"). It is where a test
// proves what the gateway can read, such as an NLA password.
var rdpWebTap func(stage string, b []byte)

func (c *rdpFilterConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.in == nil {
			c.in = make([]byte, 16<<10)
		}
		n, err := c.Conn.Read(c.in)
		if n > 0 && c.tap != nil {
			c.tap(c.in1, c.in[:n])
		}
		if n > 0 {
			out, ferr := c.feed(c.in[:n])
			if ferr != nil {
				c.err = ferr
				c.Conn.Close()
				return 0, ferr
			}
			c.pending = out
		}
		if err != nil && len(c.pending) == 0 {
			return 0, err
		}
		if err != nil {
			break
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if c.tap != nil {
		c.tap("relayed", p[:n])
	}
	return n, nil
}

// servesRDP reports whether a profile serves RDP (a desktop's rdp or a VM
// image's), so the gateway needs its hop CA even with no native RDP port.
func servesRDP(ps []Profile) bool {
	for _, p := range ps {
		if p.RDP || (p.VM != nil && p.VM.RDP) {
			return true
		}
	}
	return false
}

// tlsAlert returns the alert the peer sent, if err is one. crypto/tls
// reports a received alert as a net.OpError "remote error" around its
// unexported alert type (a uint8); tls.AlertError is only for QUIC.
func tlsAlert(err error) (uint8, bool) {
	if a, ok := errors.AsType[tls.AlertError](err); ok {
		return uint8(a), true
	}
	oe, ok := errors.AsType[*net.OpError](err)
	if !ok || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(oe.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}
