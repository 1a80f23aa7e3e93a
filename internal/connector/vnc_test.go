package connector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// wsDial opens a WebSocket to a vnc connector at addr, with the ticket in
// the query (if tok is set), and returns it as a net.Conn closed at
// cleanup. On failure it returns the handshake response, whose body holds
// the refusal reason.
type wsDial struct {
	tls          *tls.Config // client config for wss; nil for ws
	subprotocols []string
	header       http.Header
	path         string
}

func (d wsDial) dial(t testing.TB, addr, tok string) (net.Conn, *http.Response, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: d.tls}
	t.Cleanup(tr.CloseIdleConnections)
	scheme := "ws"
	if d.tls != nil {
		scheme = "wss"
	}
	u := scheme + "://" + addr + cmpOr(d.path, "/websockify")
	if tok != "" {
		u += "?ticket=" + url.QueryEscape(tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		HTTPHeader:   d.header,
		Subprotocols: d.subprotocols,
	})
	if err != nil {
		return nil, resp, err
	}
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return nc, resp, nil
}

// mustDial is dial that fails the test on error.
func (d wsDial) mustDial(t testing.TB, addr, tok string) net.Conn {
	t.Helper()
	c, resp, err := d.dial(t, addr, tok)
	if err != nil {
		t.Fatalf("WebSocket dial: %v (%s)", err, respText(resp))
	}
	return c
}

func respText(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + ": " + strings.TrimSpace(string(b))
}

// TestVNCControl: in control mode the client does the RFB handshake with
// the server itself and input reaches it unchanged, over plain and TLS
// listeners, with subprotocol "binary" and with none.
func TestVNCControl(t *testing.T) {
	ca := newCA(t, "session CA")
	for _, useTLS := range []bool{false, true} {
		for _, sub := range [][]string{{"binary"}, nil} {
			name := "plain"
			if useTLS {
				name = "tls"
			}
			if sub == nil {
				name += "/no-subprotocol"
			} else {
				name += "/binary"
			}
			t.Run(name, func(t *testing.T) {
				k := newKey(t)
				logs, logger := newLogSink(t)
				fake := startFakeRFB(t, "", "")
				cfg := Config{Kind: KindVNC, Target: fake.addr, Key: k, Logger: logger}
				d := wsDial{subprotocols: sub}
				if useTLS {
					cfg.TLS = ca.serverTLS(t)
					d.tls = ca.clientTLS()
				}
				addr, _ := startConnector(t, cfg)

				c := d.mustDial(t, addr, mint(t, k, ticket.Control))
				if _, _, name := rfbClientLogin(t, c, 0); name != "fake" {
					t.Fatalf("desktop name %q, want fake", name)
				}
				s := fake.next(t)
				if s.shared != 0 {
					t.Errorf("server got shared flag %d, want the client's 0 in control mode", s.shared)
				}
				mustWrite(t, c, cat(keyEvent, pointerEvent, fbUpdateReq))
				want := cat(keyEvent, pointerEvent, fbUpdateReq)
				if got := s.waitGot(t, len(want)); !bytes.Equal(got, want) {
					t.Fatalf("server got %x, want %x", got, want)
				}
				c.Close()
				logs.waitLine(t, `msg=connected`, "user=alice", "mode=control")
				logs.waitLine(t, `msg=disconnected`, "user=alice", "mode=control", "bytes_to_target=", "bytes_from_target=", "duration=", "remote_addr=127.0.0.1:")
			})
		}
	}
}

// TestVNCViewMode: a view ticket gets an RFB session whose input never
// reaches the server, while requests for the screen do.
func TestVNCViewMode(t *testing.T) {
	k := newKey(t)
	logs, logger := newLogSink(t)
	fake := startFakeRFB(t, "", "")
	addr, _ := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, Logger: logger})

	c := wsDial{subprotocols: []string{"binary"}}.mustDial(t, addr, mint(t, k, ticket.View))
	if w, h, name := rfbClientLogin(t, c, 0); name != "fake" || w != 8 || h != 8 {
		t.Fatalf("ServerInit %dx%d %q, want the fake's 8x8 \"fake\"", w, h, name)
	}
	s := fake.next(t)
	if s.shared != 1 {
		t.Errorf("server got shared flag %d, want 1: a viewer must not disconnect others", s.shared)
	}
	mustWrite(t, c, cat(keyEvent, pointerEvent, cutText, qemuKeyEvent, setDesktopSz, fbUpdateReq))
	// Messages arrive in order, so anything not dropped would be here
	// before the FramebufferUpdateRequest.
	if got := s.waitGot(t, len(fbUpdateReq)); !bytes.Equal(got, fbUpdateReq) {
		t.Fatalf("server got %x, want only the FramebufferUpdateRequest %x", got, fbUpdateReq)
	}

	// A message the filter cannot parse ends the connection.
	mustWrite(t, c, []byte{253, 0, 0, 0, 0, 0, 0, 0})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after an unknown message in view mode")
	}
	s.waitEnd(t)
	if got := s.waitGot(t, 0); !bytes.Equal(got, fbUpdateReq) {
		t.Fatalf("server got %x after the unknown message, want only %x", got, fbUpdateReq)
	}
	logs.waitLine(t, "msg=disconnected", "mode=view", `reason="view filter closed the connection"`, "input_dropped=5", "message type 253")
}

// TestVNCPassword: with VNCPassword set, the connector answers the
// server's VncAuth itself (for each server protocol version) and the
// client sees security type None; a wrong password fails with a 502
// before any WebSocket is opened.
func TestVNCPassword(t *testing.T) {
	for _, version := range []string{"003.003", "003.007", "003.008"} {
		t.Run(version, func(t *testing.T) {
			k := newKey(t)
			fake := startFakeRFB(t, version, "hunter2")
			_, logger := newLogSink(t)
			addr, _ := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, VNCPassword: "hunter2", Logger: logger})
			c := wsDial{}.mustDial(t, addr, mint(t, k, ticket.Control))
			rfbClientLogin(t, c, 1)
			s := fake.next(t)
			if s.hsErr != nil {
				t.Fatalf("fake server: %v", s.hsErr)
			}
			mustWrite(t, c, cat(keyEvent, fbUpdateReq))
			if got := s.waitGot(t, len(keyEvent)+len(fbUpdateReq)); !bytes.Equal(got, cat(keyEvent, fbUpdateReq)) {
				t.Fatalf("server got %x", got)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		k := newKey(t)
		fake := startFakeRFB(t, "003.008", "hunter2")
		logs, logger := newLogSink(t)
		addr, _ := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, VNCPassword: "nope", Logger: logger})
		_, resp, err := wsDial{}.dial(t, addr, mint(t, k, ticket.Control))
		if err == nil {
			t.Fatal("WebSocket opened with a wrong VNC password")
		}
		if resp == nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(respText(resp), "VNC server handshake failed") {
			t.Fatalf("got %s, want 502 VNC server handshake failed", respText(resp))
		}
		logs.waitLine(t, "msg=refused", "status=502", "refused the password")
	})
}

// TestVNCTicketRefusals attacks the vnc connector with bad tickets; each
// is refused before the upgrade with the right status and reason, and
// logged.
func TestVNCTicketRefusals(t *testing.T) {
	k := newKey(t)
	logs, logger := newLogSink(t)
	fake := startFakeRFB(t, "", "")
	addr, _ := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, Logger: logger})
	d := wsDial{subprotocols: []string{"binary"}}

	replayed := mint(t, k, ticket.Control)
	d.mustDial(t, addr, replayed)

	tests := []struct {
		name   string
		tok    string
		status int
		reason string
	}{
		{"missing", "", 401, "ticket missing"},
		{"malformed", "not-a-ticket", 403, "ticket malformed"},
		{"expired", mint(t, k, ticket.Control, func(c *ticket.Claims) { c.Expires = time.Now().Add(-time.Second) }), 403, "ticket expired"},
		{"forged", mint(t, newKey(t), ticket.Control), 403, "ticket signature invalid"},
		{"other session", mint(t, k, ticket.Control, func(c *ticket.Claims) { c.Session = "s2" }), 403, "ticket not valid for this session"},
		{"other connector", mint(t, k, ticket.Control, func(c *ticket.Claims) { c.Connector = "c2" }), 403, "ticket not valid for this connector"},
		{"replayed", replayed, 403, "ticket already used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := d.dial(t, addr, tt.tok)
			if err == nil {
				t.Fatal("WebSocket opened")
			}
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("got %s, want status %d", respText(resp), tt.status)
			}
			if body := respText(resp); !strings.Contains(body, tt.reason) {
				t.Fatalf("body %q, want reason %q", body, tt.reason)
			}
			logs.waitLine(t, "msg=refused", "reason=", tt.reason)
		})
	}
	// Nothing refused may have reached the server: only the one good dial.
	if n := fake.tcp.accepted.Load(); n != 1 {
		t.Fatalf("the server saw %d connections, want 1", n)
	}
}

// TestVNCRequestChecks: requests that are not a usable WebSocket upgrade
// are refused without spending the ticket; a Bearer header works as well
// as the query parameter.
func TestVNCRequestChecks(t *testing.T) {
	k := newKey(t)
	_, logger := newLogSink(t)
	fake := startFakeRFB(t, "", "")
	addr, _ := startConnector(t, Config{Kind: KindVNC, Target: fake.addr, Key: k, Logger: logger})

	tok := mint(t, k, ticket.Control)
	_, resp, err := wsDial{subprotocols: []string{"base64"}}.dial(t, addr, tok)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(respText(resp), "subprotocol") {
		t.Fatalf("subprotocol base64: %v, %s; want 400 naming the subprotocol", err, respText(resp))
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	plain, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/?ticket=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	if plain.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %s, want 426", respText(plain))
	}
	plain.Body.Close()
	// The ticket survived both refusals.
	c := wsDial{subprotocols: []string{"binary"}}.mustDial(t, addr, tok)
	rfbClientLogin(t, c, 1)

	c2 := wsDial{header: http.Header{"Authorization": {"Bearer " + mint(t, k, ticket.Control)}}}.mustDial(t, addr, "")
	rfbClientLogin(t, c2, 1)
}

// TestVNCTargetDown: a workload that is not listening is a 502.
func TestVNCTargetDown(t *testing.T) {
	k := newKey(t)
	ln := listen(t)
	target := ln.Addr().String()
	ln.Close()
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindVNC, Target: target, Key: k, Logger: logger})
	_, resp, err := wsDial{}.dial(t, addr, mint(t, k, ticket.Control))
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %v, %s; want 502", err, respText(resp))
	}
	logs.waitLine(t, "msg=refused", "VNC server not reachable", "connection refused")
}

// TestVNCEarlyFrame: a client that sends its first WebSocket frame right
// behind the upgrade request, before the 101, still has it relayed. The
// connector swaps the HTTP server's buffers for smaller ones at the
// upgrade (smallBufWriter) and must carry those bytes over, or keep the
// server's buffers when they do not fit. The target greets as an RFB 3.3
// server (the connector checks the version a client answers with) and
// then echoes; the early frame starts with the client's version.
func TestVNCEarlyFrame(t *testing.T) {
	k := newKey(t)
	_, logger := newLogSink(t)
	greeting := []byte("RFB 003.003\n")
	target := startTCPTarget(t, func(c net.Conn) {
		c.Write(greeting)
		echo(c)
	})
	addr, _ := startConnector(t, Config{Kind: KindVNC, Target: target.addr, Key: k, Logger: logger})
	for _, size := range []int{16, wsReadBufSize + 100} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			payload := append(slices.Clone(greeting), bytes.Repeat([]byte("early "), size)...)[:size]
			req := "GET /websockify?ticket=" + url.QueryEscape(mint(t, k, ticket.Control)) + " HTTP/1.1\r\n" +
				"Host: connector\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
				"Sec-WebSocket-Protocol: binary\r\n\r\n"
			mustWrite(t, c, append([]byte(req), maskedFrame(payload)...))

			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %s", respText(resp))
			}
			var got []byte
			want := append(slices.Clone(greeting), payload...)
			for len(got) < len(want) {
				var h [4]byte
				if _, err := io.ReadFull(br, h[:2]); err != nil {
					t.Fatalf("read frame header: %v (have %d of %d bytes)", err, len(got), len(want))
				}
				if h[0] != 0x82 {
					t.Fatalf("frame starts %#x, want a final binary frame (0x82)", h[0])
				}
				n := int(h[1])
				if n == 126 {
					io.ReadFull(br, h[2:4])
					n = int(binary.BigEndian.Uint16(h[2:4]))
				}
				b := make([]byte, n)
				if _, err := io.ReadFull(br, b); err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %q, want the greeting and the echo %q", got, want)
			}
		})
	}
}

// maskedFrame is p as one final binary frame from a client (RFC 6455
// §5.2), masked with a fixed key; p must be shorter than 64 KiB.
func maskedFrame(p []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x82}
	if len(p) < 126 {
		f = append(f, 0x80|byte(len(p)))
	} else {
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(len(p)))
	}
	f = append(f, key[:]...)
	for i, b := range p {
		f = append(f, b^key[i%4])
	}
	return f
}
