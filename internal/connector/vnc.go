package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// httpIdleTimeout closes keep-alive connections that carry no request for
// this long, so a gateway's pooled connections do not pin descriptors in
// the connector for the whole session.
const httpIdleTimeout = 2 * time.Minute

// subprotocolBinary is the WebSocket subprotocol noVNC asks for. Like
// websockify, the connector also accepts clients that ask for none; both
// mean raw RFB bytes in binary messages.
const subprotocolBinary = "binary"

// connKey is the context key under which serveHTTP stores the accepted
// connection of a request.
type connKey struct{}

// serveVNCKind is the vnc kind: WebSocket upgrades on ln, each relayed by
// serveVNC, until ctx ends.
func (s *server) serveVNCKind(ctx context.Context, ln net.Listener) error {
	return s.serveHTTP(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveVNC(ctx, w, r)
	}))
}

// serveHTTP serves h on ln (TLS-wrapped when cfg.TLS is set) until ctx is
// cancelled. Handshakes happen in the http.Server's per-connection
// goroutine, never in its accept loop.
func (s *server) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	if s.cfg.TLS != nil {
		tc := s.cfg.TLS.Clone()
		// HTTP/1.1 only: WebSockets here are RFC 6455 upgrades, which
		// HTTP/2 cannot carry, and the only client is the gateway.
		tc.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, tc)
	}
	srv := &http.Server{
		Handler: h,
		// ReadHeaderTimeout bounds the TLS handshake and the request
		// headers, so a client that connects and stalls cannot hold a
		// goroutine. There is no ReadTimeout or WriteTimeout: WebSockets
		// and app streams legitimately run for hours.
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       httpIdleTimeout,
		// Requests (and upgraded connections, whose handlers run for as
		// long as they last) end when Serve's context does.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		// The server's own complaints (TLS handshake failures among
		// them) are refusals too.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	srv.Close()
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
}

// trackedFrom returns the trackedConn under the request's connection.
func trackedFrom(ctx context.Context) *trackedConn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// writeRefusal answers a refused HTTP request with rf's status and reason
// as plain text.
func writeRefusal(w http.ResponseWriter, rf refusal) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if rf.status == http.StatusUnauthorized {
		// RFC 9110 §15.5.2: a 401 names the scheme that would work.
		h.Set("WWW-Authenticate", `Bearer realm="airlock"`)
	}
	http.Error(w, rf.reason, rf.status)
}

// ticketFromRequest returns the ticket in the "ticket" query parameter or,
// failing that, an "Authorization: Bearer" header; "" if neither.
func ticketFromRequest(r *http.Request) string {
	if t := r.URL.Query().Get("ticket"); t != "" {
		return t
	}
	return bearer(r)
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// headerHasToken reports whether a comma-separated header contains token,
// case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// isUpgrade reports whether r asks to switch protocols (RFC 9110 §7.8).
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || headerHasToken(r.Header, "Connection", "upgrade")
}

// checkWebSocketRequest refuses requests that websocket.Accept would refuse
// or whose subprotocol the connector does not speak. It runs before the
// ticket is spent, so a malformed request does not burn a good ticket.
func checkWebSocketRequest(r *http.Request) (refusal, bool) {
	if r.Method != http.MethodGet {
		return refusal{http.StatusMethodNotAllowed, "WebSocket upgrade requires GET", nil}, false
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return refusal{http.StatusUpgradeRequired, "WebSocket upgrade required", nil}, false
	}
	if r.Header.Get("Sec-WebSocket-Protocol") != "" && !headerHasToken(r.Header, "Sec-WebSocket-Protocol", subprotocolBinary) {
		return refusal{http.StatusBadRequest, `unsupported WebSocket subprotocol: want "binary" or none`,
			fmt.Errorf("client offered subprotocols %q", r.Header.Values("Sec-WebSocket-Protocol"))}, false
	}
	return refusal{}, true
}

// serveVNC admits one WebSocket with a ticket and relays it to the RFB
// server at the target. ctx is Serve's: the relay outlives the request.
//
// In control mode without a VNC password the bytes pass unchanged, the
// RFB handshake included, so the client and server may use any security
// type they share; but the client's ProtocolVersion and security type
// choice are checked before the server sees them (relayHandshake). Every
// viewer reaches the server from the connector's one address, so a server
// that blacklists addresses must have that off (the gateway runs Xvnc with
// -BlacklistTimeout 0): no login the connector could make clears a count
// that several spoilt connections open at once have already run up. In view mode, or with
// Config.VNCPassword, the connector logs in to the server itself (before upgrading, so a failure is an HTTP
// 502 rather than a dead WebSocket), offers the client security type None,
// and then relays. View mode also forces ClientInit's shared flag on, so a
// viewer cannot make the server disconnect the other clients, and runs the
// client's messages through a viewFilter.
//
// Once the connection is ready to relay, serveVNC hands it to a goroutine
// of its own and returns: net/http holds the request, the response and the
// server's buffers for as long as a handler runs, several kilobytes that
// an hours-long WebSocket does not need.
func (s *server) serveVNC(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	done, ok := s.enter()
	if !ok {
		http.Error(w, "connector shutting down", http.StatusServiceUnavailable)
		return
	}
	defer done()
	rctx := r.Context()
	log := s.log.With("remote_addr", r.RemoteAddr)
	refuse := func(rf refusal, attrs ...any) {
		s.logRefusal(rctx, r.RemoteAddr, rf, attrs...)
		writeRefusal(w, rf)
	}

	tok := ticketFromRequest(r)
	now := s.cfg.Now()
	claims, err := ticket.Check(s.cfg.Key, tok, s.cfg.Session, s.cfg.Name, now)
	if err != nil {
		var attrs []any
		if tok != "" {
			attrs = []any{"ticket", ticket.Token(tok)} // redacted to a prefix
		}
		refuse(ticketRefusal(err), attrs...)
		return
	}
	who := []any{"user", claims.User, "mode", claims.Mode}
	if err := checkMode(claims); err != nil {
		refuse(refusal{http.StatusForbidden, "ticket mode unknown", err}, who...)
		return
	}
	if rf, ok := checkWebSocketRequest(r); !ok {
		refuse(rf, who...)
		return
	}
	if err := s.guard.Use(claims, now); err != nil {
		refuse(ticketRefusal(err), who...)
		return
	}

	server, release, err := s.dial(rctx)
	if err != nil {
		refuse(refusal{http.StatusBadGateway, "VNC server not reachable", err}, who...)
		return
	}
	relaying := false
	defer func() {
		if !relaying {
			release()
		}
	}()
	view := claims.Mode == ticket.View
	// A clipboard policy needs the connector to parse both directions,
	// which it can only do on a stream it has taken over (clipboard.go).
	clip := s.cfg.Clipboard != "" && s.cfg.Clipboard != contract.ClipboardBoth
	terminate := view || s.cfg.VNCPassword != "" || clip
	if terminate {
		server.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := serverLogin(server, s.cfg.VNCPassword); err != nil {
			refuse(refusal{http.StatusBadGateway, "VNC server handshake failed", fmt.Errorf("log in to vnc server %s: %w", s.cfg.Target, err)}, who...)
			return
		}
		server.SetDeadline(time.Time{})
	}

	c, err := websocket.Accept(smallBufWriter{w}, r, &websocket.AcceptOptions{
		Subprotocols: []string{subprotocolBinary},
		// Any Origin is accepted. Origin checks stop a foreign page from
		// riding on ambient credentials (cookies); this connector has
		// none: the single-use ticket in the URL or header is the
		// credential, and a foreign page cannot have it. And the browser
		// reaches us through the gateway, so the Origin it sends is the
		// gateway's, never our Host.
		InsecureSkipVerify: true,
		// Framebuffer updates are already encoded (Tight, ZRLE, JPEG);
		// deflate would cost CPU for little gain.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request already.
		s.logRefusal(rctx, r.RemoteAddr, refusal{0, "WebSocket handshake failed", err}, who...)
		return
	}
	if sp := c.Subprotocol(); sp != subprotocolBinary && sp != "" {
		c.Close(websocket.StatusProtocolError, "unsupported subprotocol")
		s.logRefusal(rctx, r.RemoteAddr, refusal{0, "unsupported subprotocol", fmt.Errorf("negotiated %q", sp)}, who...)
		return
	}
	netc, _ := rctx.Value(connKey{}).(net.Conn)
	client := newWSConn(c, netc)
	start := time.Now()
	log.InfoContext(ctx, "connected", who...)

	var filter *viewFilter
	var relayed net.Conn = client
	var relayedServer net.Conn = server
	var stats *clipStats
	if clip {
		who = append(who, "clipboard", s.cfg.Clipboard)
		stats = &clipStats{onDrop: func(dir string, n int64) {
			// The first refusal in each direction, as it happens; the
			// counts are in the disconnect line.
			log.InfoContext(ctx, "clipboard refused", append(who, "direction", dir, "bytes", n)...)
		}}
	}
	if terminate {
		client.SetDeadline(time.Now().Add(handshakeTimeout))
		shared, err := clientLogin(client)
		if err != nil {
			client.Close()
			log.WarnContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "RFB handshake with client failed", "error", err)...)
			return
		}
		client.SetDeadline(time.Time{})
		if view {
			shared = 1
		}
		if _, err := server.Write([]byte{shared}); err != nil {
			client.Close()
			log.WarnContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "write ClientInit to server failed", "error", err)...)
			return
		}
		if clip {
			server.SetDeadline(time.Now().Add(handshakeTimeout))
			si, err := clipServerInit(server)
			if err == nil {
				server.SetDeadline(time.Time{})
				client.SetDeadline(time.Now().Add(handshakeTimeout))
				_, err = client.Write(si)
				client.SetDeadline(time.Time{})
			}
			if err != nil {
				client.Close()
				log.WarnContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "RFB ServerInit under the clipboard filter failed", "error", err)...)
				return
			}
			filter = newClientFilter(client, &clientPolicy{input: !view, cutText: !view && s.cfg.Clipboard.AllowsIn(), stats: stats})
			relayed = &filteredConn{Conn: client, f: filter}
			relayedServer = &serverFilteredConn{Conn: server, f: newServerFilter(server, s.cfg.Clipboard.AllowsOut(), stats)}
		} else if view {
			filter = newViewFilter(client)
			relayed = &filteredConn{Conn: client, f: filter}
		}
	}

	relaying = s.start(func() {
		defer release()
		if !terminate {
			// The bytes pass unchanged, but the start of the handshake
			// is checked on the way: see relayHandshake. It
			// runs here, not in the HTTP handler, whose goroutine would
			// grow a stack for it only to end.
			deadline := time.Now().Add(handshakeTimeout)
			client.SetDeadline(deadline)
			server.SetDeadline(deadline)
			if err := relayHandshake(client, server); err != nil {
				client.Close()
				log.WarnContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "RFB handshake refused", "error", err)...)
				return
			}
			client.SetDeadline(time.Time{})
			server.SetDeadline(time.Time{})
		}
		ps, err := relay.Pipe(ctx, relayed, relayedServer, s.cfg.IdleTimeout)
		attrs := append(who,
			"bytes_to_target", ps.AToB,
			"bytes_from_target", ps.BToA,
			"duration", time.Since(start),
		)
		if filter != nil {
			if view {
				attrs = append(attrs, "input_dropped", filter.dropped)
			}
			if errors.Is(filter.err, errViewRefused) {
				attrs = append(attrs, "reason", "view filter closed the connection", "error", filter.err)
				err = nil
			}
		}
		if stats != nil {
			attrs = append(attrs, "clipboard_in_dropped", stats.inDropped.Load(), "clipboard_out_dropped", stats.outDropped.Load())
			if !errors.Is(err, errClipboardRefused) && errors.Is(filter.err, errClipboardRefused) {
				err = filter.err
			}
			if errors.Is(err, errClipboardRefused) {
				attrs = append(attrs, "reason", "clipboard filter closed the connection", "error", err)
				err = nil
			}
		}
		if err != nil && !isClosedErr(err) {
			attrs = append(attrs, "error", err)
		}
		log.InfoContext(ctx, "disconnected", attrs...)
	})
	if !relaying {
		client.Close()
		log.InfoContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "connector shutting down")...)
	}
}

// isClosedErr reports whether err only says a connection ended, which is
// how every relayed connection ends and not worth an error attribute.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.Canceled) ||
		websocket.CloseStatus(err) == websocket.StatusNormalClosure ||
		websocket.CloseStatus(err) == websocket.StatusGoingAway
}

// filteredConn is a connection whose reads go through a view filter;
// writes, deadlines and Close go straight to the connection. It
// deliberately has no CloseWrite or unwrapping method, so nothing can read
// around the filter. It is a relay.ReadWaiter through the filter, so an
// idle viewer holds no relay buffer.
type filteredConn struct {
	net.Conn
	f *viewFilter
}

func (c *filteredConn) Read(p []byte) (int, error) { return c.f.Read(p) }

func (c *filteredConn) WaitRead() error { return c.f.WaitRead() }
