package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/relay"
)

// serveTLS is the tls kind: mutual TLS in, plain TCP to the target out,
// for native RDP clients (through `airlock rdp` and the gateway's TLS
// front). There is no ticket: the client certificate, issued per session
// by the session CA that Config.TLS.ClientCAs holds, is the credential,
// and crypto/tls refuses any other certificate, or none, during the
// handshake (the client gets a TLS alert).
func (s *server) serveTLS(ctx context.Context, ln net.Listener) error {
	return s.acceptLoop(ctx, ln, func(c net.Conn) { s.relayTLS(ctx, c) })
}

// relayTLS handshakes on one accepted connection and relays it.
//
// The relay runs in a goroutine of its own, and this one returns: the
// handshake grows this goroutine's stack to tens of kilobytes, which the
// runtime gives back only a halving per garbage collection, while a fresh
// goroutine starts small.
func (s *server) relayTLS(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	conn := tls.Server(raw, s.cfg.TLS)
	relaying := false
	defer func() {
		if !relaying {
			conn.Close()
		}
	}()

	// The handshake runs here, in the connection's goroutine, with a
	// deadline: a client that connects and stalls cannot hold it for longer.
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.logRefusal(ctx, remote, refusal{reason: "TLS handshake failed", err: err})
		return
	}
	cs := conn.ConnectionState()
	// RequireAndVerifyClientCert (checked by validate) guarantees a
	// verified chain here; fail closed should that ever change.
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		s.logRefusal(ctx, remote, refusal{reason: "no verified client certificate"})
		return
	}
	user := cs.PeerCertificates[0].Subject.CommonName
	who := []any{"remote_addr", remote, "user", user, "mode", "control", "cert_serial", cs.PeerCertificates[0].SerialNumber.String()}

	target, release, err := s.dialPatient(ctx)
	if err != nil {
		s.logRefusal(ctx, remote, refusal{reason: "target not reachable", err: err}, "user", user)
		return
	}
	var client net.Conn = conn
	if tc, ok := raw.(*trackedConn); ok {
		client = batchedTLS{Conn: conn, raw: tc}
	}
	start := time.Now()
	s.log.InfoContext(ctx, "connected", who...)
	relaying = s.start(func() {
		defer release()
		stats, err := relay.Pipe(ctx, client, target, s.cfg.IdleTimeout)
		attrs := append(who,
			"bytes_to_target", stats.AToB,
			"bytes_from_target", stats.BToA,
			"duration", time.Since(start),
		)
		if err != nil && !isClosedErr(err) {
			attrs = append(attrs, "error", err)
		}
		s.log.InfoContext(ctx, "disconnected", attrs...)
	})
	if !relaying {
		release()
		s.log.InfoContext(ctx, "disconnected", append(who, "duration", time.Since(start), "reason", "connector shutting down")...)
	}
}

// targetPatience is how long a tls connector keeps dialing a target that
// refuses connections.
const targetPatience = 15 * time.Second

// dialPatient dials the target, retrying while it refuses, for up to
// targetPatience: an RDP server often comes up after the session is ready
// (xrdp is a helper, started only then; a VM's guest later still), and an
// RDP client that meets a closed connection gives up instead of retrying.
func (s *server) dialPatient(ctx context.Context) (net.Conn, func(), error) {
	deadline := time.Now().Add(targetPatience)
	wait := 50 * time.Millisecond
	for {
		c, release, err := s.dial(ctx)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().Add(wait).After(deadline) {
			return c, release, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// batchedTLS is a *tls.Conn over a trackedConn whose every Write leaves
// in one write(2) (see trackedConn.startBatch).
type batchedTLS struct {
	*tls.Conn
	raw *trackedConn
}

func (c batchedTLS) Write(p []byte) (int, error) {
	// Up to a kilobyte is one record, even while crypto/tls keeps records
	// small at the start of a connection, and so one write(2) anyway.
	if len(p) <= 1<<10 {
		return c.Conn.Write(p)
	}
	c.raw.startBatch()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.endBatch(); err == nil && ferr != nil {
		// crypto/tls took the bytes, but they never left.
		return 0, ferr
	}
	return n, err
}
