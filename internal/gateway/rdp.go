package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/rdpfile"
	"github.com/airlock-hpc/airlock/internal/relay"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// Native RDP clients (issue 11).
//
//	RDP client ─▶ airlock rdp ──mTLS (client CA)──▶ gateway RDP port
//	  ──mTLS (hop CA, gateway's own certificate)──▶ session's tls connector ──▶ 127.0.0.1:3389
//
// The gateway terminates the user's TLS: it is the one place that can ask
// the store, on every connection, whether the certificate was revoked,
// whether the session still runs and whether the user may still use it.

// ConnRDP names a session's tls connector to its RDP server.
const ConnRDP = "rdp"

// rdpTarget is where the RDP server listens inside the seal: xrdp for a
// desktop, the guest's forwarded port for a VM.
const rdpTarget = "127.0.0.1:3389"

// rdpState is the gateway's side of native RDP: its two CAs and its own
// certificate for the hop to connectors.
type rdpState struct {
	client, hop *rdpCA
	hopCert     tls.Certificate
}

// initRDP loads or makes the CAs and a fresh hop certificate.
func (g *Gateway) initRDP() error {
	dir := g.cfg.StateDir
	client, err := loadOrMakeCA(dir, "rdp-client-ca", "airlock RDP clients")
	if err != nil {
		return err
	}
	hop, err := loadOrMakeCA(dir, "rdp-hop-ca", "airlock gateway to connector")
	if err != nil {
		return err
	}
	if g.secrets != nil {
		// Several gateways: one pair of CAs for all, so a client
		// certificate from one is taken by another, and a connector
		// takes every gateway's hop certificate.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, ca := range []struct {
			to       **rdpCA
			name, cn string
		}{{&client, "rdp-client-ca", "airlock RDP clients"}, {&hop, "rdp-hop-ca", "airlock gateway to connector"}} {
			if err := g.sharedFiles(ctx, ca.name, ca.name+".pem", ca.name+".key"); err != nil {
				return err
			}
			if *ca.to, err = loadOrMakeCA(dir, ca.name, ca.cn); err != nil {
				return err
			}
		}
	}
	now := time.Now()
	l, err := hop.issue("airlock gateway", "", "", true, now.Add(-time.Hour), now.Add(10*365*24*time.Hour))
	if err != nil {
		return fmt.Errorf("rdp hop certificate: %w", err)
	}
	hc, err := tls.X509KeyPair(l.certPEM, l.keyPEM)
	if err != nil {
		return fmt.Errorf("rdp hop certificate: %w", err)
	}
	g.rdp = &rdpState{client: client, hop: hop, hopCert: hc}
	return nil
}

// rdpConnector adds a session's tls connector to its RDP server, with the
// certificates it needs: the hop CA as its only client CA, and for the
// local backend a server certificate from the hop CA for the session's id,
// as files in the session directory (they are on this machine).
//
// The session does not wait for the RDP server to be ready (the tls kind's
// default): xrdp is a helper process, which the seal starts only once the
// session is ready, and a VM's guest takes minutes, if it serves RDP at
// all. The tls connector waits a little for a target that refuses instead.
func (g *Gateway) rdpConnector(spec *contract.Spec, dir, listen string) error {
	spec.Connectors = append(spec.Connectors, contract.ConnectorSpec{
		Name: ConnRDP, Kind: contract.KindTLS, Target: rdpTarget, Listen: listen,
	})
	if g.remote != nil {
		// A runner on a compute node: the connector listens on TCP with a
		// certificate the runner makes and the gateway pins (as for every
		// connector there), and gets the hop CA inline (it is public).
		spec.TLS = &contract.TLSFiles{ClientCAPEM: string(g.rdp.hop.pem)}
		return nil
	}
	now := time.Now()
	l, err := g.rdp.hop.issue("airlock session "+spec.ID, spec.ID, spec.ID, false, now.Add(-time.Hour), now.Add(cmp.Or(time.Duration(spec.Lifetime), 30*24*time.Hour)+time.Hour))
	if err != nil {
		return fmt.Errorf("rdp connector certificate: %w", err)
	}
	files := &contract.TLSFiles{
		CertFile: filepath.Join(dir, "rdp-connector.pem"), KeyFile: filepath.Join(dir, "rdp-connector.key"),
		ClientCAFile: filepath.Join(dir, "rdp-hop-ca.pem"),
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{files.CertFile, l.certPEM}, {files.KeyFile, l.keyPEM}, {files.ClientCAFile, g.rdp.hop.pem}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return fmt.Errorf("rdp connector: %w", err)
		}
	}
	spec.TLS = files
	return nil
}

// xrdpScript starts xrdp inside a desktop's seal, as the owner, with no
// sesman and no PAM: its VNC module connects straight to the session's own
// Xvnc, so one desktop is reachable by VNC in the browser and by RDP
// clients at once. The configuration and xrdp's own TLS certificate are
// made afresh in the seal's private /tmp. xrdp listens on the seal's
// loopback only; the tls connector is the only way to it. Its clipboard
// (the VNC module's, text between cliprdr and Xvnc's cut text) is on
// unless the profile allows none; the gateway's relay enforces a one-way
// policy, and takes the channel out for none before xrdp sees it.
const xrdpScript = `set -eu
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # where Debian puts xrdp
cliprdr=false
[ "${1:-}" = clipboard ] && cliprdr=true
d=/tmp/.airlock-xrdp
mkdir -p -m 0700 "$d"
cd "$d"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 30 -subj "/CN=airlock desktop" 2>/dev/null
pw=
if [ -s /tmp/.airlock-vncpasswd ]; then
  # desktop.vnc_password: Xvnc asks for the session's password, which the
  # runner wrote for it in vncpasswd's format (DES with VNC's fixed key);
  # xrdp's VNC module needs it in clear. Only the owner can read either.
  pw=$(openssl enc -d -des-ecb -K e84ad660c4721ae0 -nopad -nosalt -provider legacy -provider default -in /tmp/.airlock-vncpasswd | tr -d '\000')
fi
cat > xrdp.ini <<EOF
[Globals]
ini_version=1
fork=true
port=tcp://127.0.0.1:3389
use_vsock=false
tcp_nodelay=true
security_layer=tls
crypt_level=high
certificate=$d/cert.pem
key_file=$d/key.pem
ssl_protocols=TLSv1.2, TLSv1.3
autorun=Xvnc
allow_channels=true
max_bpp=32
new_cursors=true
use_fastpath=both
require_credentials=false
[Logging]
LogFile=$d/xrdp.log
LogLevel=WARNING
EnableSyslog=false
[Channels]
rdpdr=false
rdpsnd=false
drdynvc=false
cliprdr=$cliprdr
rail=false
xrdpvr=false
tcutils=false
[Xvnc]
name=Xvnc
lib=libvnc.so
username=na
password=$pw
ip=127.0.0.1
port=5901
EOF
exec xrdp --nodaemon --config "$d/xrdp.ini"
`

// xrdpProcess is the process that serves RDP in a desktop session, with
// its clipboard channel when clip.
func xrdpProcess(clip bool) contract.Command {
	argv := []string{"/bin/sh", "-c", xrdpScript, "xrdp"}
	if clip {
		argv = append(argv, "clipboard")
	}
	return contract.Command{Argv: argv}
}

// IssueRDPFile makes an .airlock file for user's session: a fresh client
// certificate (valid until the session ends, at most RDPMaxCert), recorded
// in the store as a token named after the session, so that revoking the
// token (API, portal) revokes the file.
func (g *Gateway) IssueRDPFile(ctx context.Context, user string, s *session.Session, gatewayAddr string) (*rdpfile.File, session.Token, error) {
	if g.rdp == nil || g.cfg.RDPListen == "" {
		return nil, session.Token{}, apiErr(404, "rdp_off", "this gateway has no port for native RDP clients")
	}
	if _, ok := s.Endpoints[ConnRDP]; !ok {
		return nil, session.Token{}, apiErr(409, "no_rdp", fmt.Sprintf("session %s serves no RDP", s.ID))
	}
	if s.State != session.Ready {
		return nil, session.Token{}, apiErr(409, "not_ready", fmt.Sprintf("session %s is %s", s.ID, s.State))
	}
	if p, _ := g.profile(s.Profile); !p.clipboardWhole() {
		// A native client's TLS goes end to end: the gateway could not
		// hold its clipboard to the profile's policy (config check
		// refuses the combination).
		return nil, session.Token{}, apiErr(409, "browser_only", fmt.Sprintf("session %s limits the clipboard (%s), which only the browser's RDP client can be held to", s.ID, p.Clipboard))
	}
	now := g.now()
	until := now.Add(cmp.Or(g.cfg.RDPMaxCert, 12*time.Hour))
	if s.Lifetime > 0 {
		start := s.Started
		if start.IsZero() {
			start = s.Created
		}
		if end := start.Add(s.Lifetime); end.Before(until) {
			until = end
		}
	}
	l, err := g.rdp.client.issue(user, s.ID, "", true, now.Add(-time.Minute), until)
	if err != nil {
		return nil, session.Token{}, err
	}
	t := session.Token{ID: "rdp-" + l.serial[:16], User: user, Name: "RDP file for session " + s.ID + " until " + until.UTC().Format(time.RFC3339),
		Created: now, Hash: rdpCertHash(l.der)}
	if err := g.cfg.Store.CreateToken(ctx, t); err != nil {
		return nil, session.Token{}, storeFault("rdp certificate", err)
	}
	pin := sha256.Sum256(g.cert.Certificate[0])
	f := &rdpfile.File{Version: rdpfile.Version, Gateway: gatewayAddr, PinSHA256: hex.EncodeToString(pin[:]),
		Session: s.ID, User: user, Expires: until, CertPEM: string(l.certPEM), KeyPEM: string(l.keyPEM)}
	if user == s.Owner {
		// The guest's one-time password is the owner's alone: a file made
		// for anyone else (a control share) goes without it.
		f.Password = g.rdpPassword(s)
		if p, _ := g.profile(s.Profile); f.Password != "" && p.Kind == "desktop" {
			// The shadow server's SAM file names this account (the
			// owner's name, or "airlock" for one it cannot take).
			f.User = rdpLogonUser(p, s)
		}
	}
	return f, t, nil
}

// rdpAddress is the host:port clients dial for the RDP port: RDPAddress,
// else the request's host with the port of RDPListen.
func (g *Gateway) rdpAddress(reqHost string) string {
	if g.cfg.RDPAddress != "" {
		return g.cfg.RDPAddress
	}
	_, port, _ := net.SplitHostPort(g.cfg.RDPListen)
	host := reqHost
	if h, _, err := net.SplitHostPort(reqHost); err == nil {
		host = h
	}
	return net.JoinHostPort(cmp.Or(host, "localhost"), port)
}

// ServeRDP serves the TLS port for native RDP clients on ln until ctx ends.
func (g *Gateway) ServeRDP(ctx context.Context, ln net.Listener) error {
	if g.rdp == nil {
		return errors.New("gateway: rdp: not set up")
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{g.cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    g.rdp.client.pool,
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go g.serveRDPConn(ctx, tls.Server(c, conf))
	}
}

// rdpRefuse logs and audits a refused connection; nothing reached a connector.
func (g *Gateway) rdpRefuse(ctx context.Context, user, sessionID, remote, reason string, err error) {
	attrs := []any{"remote_addr", remote, "reason", reason}
	if user != "" {
		attrs = append(attrs, "user", user, "session", sessionID)
	}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	g.log.WarnContext(ctx, "rdp: refused", attrs...)
	g.audit(ctx, cmp.Or(user, "-"), "rdp_refused", sessionID, remote, reason)
}

func (g *Gateway) serveRDPConn(ctx context.Context, conn *tls.Conn) {
	remote := conn.RemoteAddr().String()
	defer conn.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		g.rdpRefuse(ctx, "", "", remote, "TLS handshake failed (no or untrusted client certificate, expired, or not TLS)", err)
		return
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	user, sid := leaf.Subject.CommonName, certSession(leaf)
	target, tag, why, err := g.rdpCheck(ctx, leaf.Raw, user, sid)
	if why != "" {
		g.rdpRefuse(ctx, user, sid, remote, why, err)
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte(rdpfile.StatusRefused + rdpSentence(why, sid) + "\n"))
		return
	}
	defer target.Close()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(rdpfile.StatusOK)); err != nil {
		return
	}
	conn.SetWriteDeadline(time.Time{})
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	defer g.track(tag, rcancel)()
	defer g.viewerStart(sid)()
	g.audit(ctx, user, "connect", sid, remote, "rdp (control)")
	start := time.Now()
	stats, err := relay.Pipe(rctx, conn, target, 0)
	attrs := []any{"session", sid, "user", user, "remote_addr", remote, "bytes_in", stats.AToB, "bytes_out", stats.BToA, "duration", time.Since(start)}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		attrs = append(attrs, "error", err)
	}
	g.log.InfoContext(ctx, "rdp: disconnected", attrs...)
}

// rdpSentence is what the user's `airlock rdp` prints for a refusal.
func rdpSentence(why, sid string) string {
	switch {
	case strings.HasPrefix(why, "certificate revoked"):
		return "This .airlock file was revoked; download a new one from the session page."
	case strings.HasPrefix(why, "store fault"):
		return "The gateway cannot check this file right now; try again in a moment."
	case strings.HasPrefix(why, "session is "), why == "no such session":
		return fmt.Sprintf("Session %s is no longer running; start a new one and download its file.", sid)
	case strings.HasPrefix(why, "session's connector"):
		return fmt.Sprintf("Session %s did not answer; try again in a moment.", sid)
	case strings.HasPrefix(why, "session serves no RDP"):
		return fmt.Sprintf("Session %s serves no RDP.", sid)
	}
	return fmt.Sprintf("You may not use session %s with this file; download a new one from the session page.", sid)
}

// rdpCheck decides one connection after its handshake: the certificate
// is one the store still holds (not revoked), for a session that runs,
// of a user who still exists and owns it. Then it dials the session's tls
// connector. why is "" when admitted.
func (g *Gateway) rdpCheck(ctx context.Context, der []byte, user, sid string) (target net.Conn, tag viewerTag, why string, err error) {
	if sid == "" || user == "" {
		return nil, tag, "certificate names no session or user", nil
	}
	tok, err := g.cfg.Store.TokenByHash(ctx, rdpCertHash(der), g.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, tag, "certificate revoked (or unknown)", nil
	case err != nil:
		return nil, tag, "store fault; try again", err
	case tok.User != user:
		return nil, tag, "certificate does not match its record", nil
	}
	if _, err := g.current(ctx, user); err != nil {
		return nil, tag, "user no longer exists or cannot be checked", err
	}
	s, err := g.cfg.Store.GetSession(ctx, sid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, tag, "no such session", nil
	case err != nil:
		return nil, tag, "store fault; try again", err
	case s.Owner != user:
		return nil, tag, "not the session's owner", nil
	case s.State != session.Ready:
		return nil, tag, "session is " + string(s.State), nil
	}
	endpoint, ok := s.Endpoints[ConnRDP]
	if !ok {
		return nil, tag, "session serves no RDP", nil
	}
	if p, _ := g.profile(s.Profile); !p.clipboardWhole() {
		return nil, tag, "session serves RDP in the browser only (clipboard " + string(p.Clipboard) + ")", nil
	}
	target, err = g.dialRDP(ctx, s, endpoint)
	if err != nil {
		return nil, tag, "session's connector unreachable", err
	}
	tag = viewerTag{Session: s.ID, Owner: s.Owner, User: user, Token: tok.ID, Mode: session.Control, proof: rdpCertHash(der)}
	return target, tag, "", nil
}

// dialRDP opens the hop to a session's tls connector: mutual TLS with the
// gateway's hop certificate, the connector's certificate checked against
// the hop CA for the session's name.
//
// On a node's TCP endpoint (a remote backend) the connector's certificate
// is the runner's own, pinned by the SHA-256 its ready event reported.
func (g *Gateway) dialRDP(ctx context.Context, s *session.Session, endpoint string) (net.Conn, error) {
	conf := &tls.Config{
		Certificates: []tls.Certificate{g.rdp.hopCert},
		RootCAs:      g.rdp.hop.pool,
		ServerName:   s.ID,
		MinVersion:   tls.VersionTLS13,
	}
	network, addr := "tcp", endpoint
	if p, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		network, addr = "unix", p
	} else {
		pin := pinned(s.TLSSHA256)
		conf.RootCAs, conf.ServerName = nil, ""
		conf.InsecureSkipVerify, conf.VerifyPeerCertificate = pin.InsecureSkipVerify, pin.VerifyPeerCertificate
	}
	d := tls.Dialer{Config: conf}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.DialContext(dctx, network, addr)
}

// createRDPFile answers POST /api/v1/sessions/{id}/rdp with a fresh
// .airlock file for the caller's own session (as a download: the key in it
// is shown once and kept nowhere).
func (g *Gateway) createRDPFile(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := noBody(w, r); err != nil {
		return err
	}
	s, err := g.ownSession(r, id, false)
	if err != nil {
		return err
	}
	f, t, err := g.IssueRDPFile(r.Context(), id.user, s, g.rdpAddress(r.Host))
	if err != nil {
		return err
	}
	b, err := f.Marshal()
	if err != nil {
		return err
	}
	g.audit(r.Context(), id.user, "rdp_file", s.ID, r.RemoteAddr, fmt.Sprintf("%s until %s", t.ID, f.Expires.UTC().Format(time.RFC3339)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="`+s.ID+`.airlock"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Airlock-Token-Id", t.ID)
	w.WriteHeader(201)
	_, err = w.Write(b)
	return err
}
