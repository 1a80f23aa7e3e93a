package gateway

// Forwards across gateways (issue 18). A forward's tunnel reaches one
// gateway, its holder, whose peer address the forward's endpoint in the
// store carries (tunnel:ID@HOST:PORT). Any other gateway asked for the
// forward opens each connection to the app through the holder: TLS to the
// holder, then an upgrade on which each side proves, with a key derived
// from the master key every gateway of the site shares, that it is a
// gateway of this site. The proofs are bound to the TLS connection's
// exported keying material, so a machine in the middle can neither make
// nor relay them. The certificate is not what is checked: a site may give
// its gateways one certificate for the public name only.

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
)

const (
	peerUpgrade     = "airlock-peer-stream"
	peerProofHeader = "Airlock-Peer-Proof"
	peerDialTimeout = 10 * time.Second
)

// peerAddr is how the other gateways reach this one: Config.PeerAddress,
// or the listener's address, with this host's name for an unspecified IP.
func (g *Gateway) peerAddr() string {
	if p := g.peer.Load(); p != nil {
		return *p
	}
	return ""
}

// peerAddress is what peerAddr says once Serve has its listener.
func peerAddress(configured string, ln net.Addr) string {
	if configured != "" {
		return configured
	}
	a, ok := ln.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if !a.IP.IsUnspecified() {
		return a.String()
	}
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	return net.JoinHostPort(host, fmt.Sprint(a.Port))
}

// peerProof is one side's proof for a stream to forward id on the TLS
// connection cs: dir says which side, so one cannot be replayed as the other.
func (g *Gateway) peerProof(dir, id string, cs *tls.ConnectionState) (string, error) {
	ekm, err := cs.ExportKeyingMaterial("EXPORTER-airlock-peer-stream", nil, 32)
	if err != nil {
		return "", fmt.Errorf("peer proof: %w", err)
	}
	k := derive(g.master, "airlock peer stream", dir)
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(ekm)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// tunnelHolder splits a forward's endpoint into its ID and the peer
// address of the gateway holding its tunnel ("" when none does).
func tunnelHolder(endpoint string) (id, holder string, ok bool) {
	rest, ok := strings.CutPrefix(endpoint, forwardEndpointPrefix)
	if !ok {
		return "", "", false
	}
	id, holder, _ = strings.Cut(rest, "@")
	return id, holder, true
}

// dialForward opens a connection to forward id's app: through its tunnel
// if it reaches this gateway, else through the gateway holding it, as the
// store says now (not the session a cache may hold).
func (g *Gateway) dialForward(ctx context.Context, id string) (net.Conn, error) {
	c, err := g.dialTunnel(ctx, id)
	if !errors.Is(err, errTunnelDown) || !g.lease.shared() {
		return c, err
	}
	s, serr := g.cfg.Store.GetSession(ctx, id)
	if serr != nil {
		return nil, fmt.Errorf("forward %s: find its tunnel: %w", id, serr)
	}
	_, holder, _ := tunnelHolder(s.Endpoints[contract.ConnApp])
	if holder == "" || holder == g.peerAddr() {
		return nil, err
	}
	return g.dialPeerStream(ctx, id, holder)
}

// dialPeerStream asks the gateway at holder for a stream to forward id.
func (g *Gateway) dialPeerStream(ctx context.Context, id, holder string) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: peerDialTimeout}, Config: &tls.Config{
		// Not the certificate: the proofs below, bound to this
		// connection, say who the other end is (see the top of the file).
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"http/1.1"},
	}}
	nc, err := d.DialContext(ctx, "tcp", holder)
	if err != nil {
		return nil, fmt.Errorf("forward %s: reach the gateway holding its tunnel (%s): %w", id, holder, err)
	}
	tc := nc.(*tls.Conn)
	fail := func(err error) (net.Conn, error) {
		tc.Close()
		return nil, fmt.Errorf("forward %s: through the gateway holding its tunnel (%s): %w", id, holder, err)
	}
	cs := tc.ConnectionState()
	proof, err := g.peerProof("to-holder", id, &cs)
	if err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(peerDialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	tc.SetDeadline(deadline)
	if _, err := fmt.Fprintf(tc, "GET /api/v1/peer/forwards/%s/stream HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
		id, holder, peerUpgrade, peerProofHeader, proof); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fail(fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b))))
	}
	want, err := g.peerProof("from-holder", id, &cs)
	if err != nil {
		return fail(err)
	}
	if !hmac.Equal([]byte(resp.Header.Get(peerProofHeader)), []byte(want)) {
		g.log.WarnContext(ctx, "refused: a peer gateway's answer without a valid proof", "session", id, "peer", holder)
		return fail(errors.New("its answer does not prove it is a gateway of this site"))
	}
	tc.SetDeadline(time.Time{})
	return &bufferedConn{Conn: tc, r: br}, nil
}

// bufferedConn reads what a bufio.Reader over Conn holds first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// peerStream is the holder's end of dialPeerStream:
// GET /api/v1/peer/forwards/{id}/stream, upgraded to a raw stream to the
// forward's app through its tunnel here. Nothing but the proof lets in:
// the gateway asking has checked the visitor's right to the forward.
func (g *Gateway) peerStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	refuse := func(status int, code, why string) {
		g.log.WarnContext(r.Context(), "refused: peer stream: "+why, "session", id, "remote_addr", r.RemoteAddr)
		writeErr(w, apiErr(status, code, why))
	}
	if r.TLS == nil || !strings.EqualFold(r.Header.Get("Upgrade"), peerUpgrade) {
		refuse(400, "not_peer_upgrade", "a peer stream is an upgrade to "+peerUpgrade+" over TLS")
		return
	}
	want, err := g.peerProof("to-holder", id, r.TLS)
	if err != nil || !hmac.Equal([]byte(r.Header.Get(peerProofHeader)), []byte(want)) {
		refuse(403, "bad_peer_proof", "the request does not prove it comes from a gateway of this site")
		return
	}
	back, err := g.peerProof("from-holder", id, r.TLS)
	if err != nil {
		refuse(500, "peer_proof", err.Error())
		return
	}
	app, err := g.dialTunnel(r.Context(), id)
	if err != nil {
		refuse(502, "tunnel_down", err.Error())
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		app.Close()
		refuse(500, "hijack", err.Error())
		return
	}
	if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s: %s\r\n\r\n", peerUpgrade, peerProofHeader, back); err != nil {
		c.Close()
		app.Close()
		return
	}
	c.SetDeadline(time.Time{})
	// The stream ends with the tunnel (the forward stopped, the node
	// gone) or with this gateway.
	ctx, cancel := context.WithCancel(g.ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		c.Close()
		app.Close()
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		// What the asking gateway sent with its upgrade, then the rest.
		io.Copy(app, io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), c))
		cancel()
	})
	io.Copy(c, app)
	cancel()
	wg.Wait()
}
