package connector

import (
	"context"
	"crypto/tls"
	"net"
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
func (s *server) relayTLS(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	conn := tls.Server(raw, s.cfg.TLS)
	defer conn.Close()

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

	target, release, err := s.dial(ctx)
	if err != nil {
		s.logRefusal(ctx, remote, refusal{reason: "target not reachable", err: err}, "user", user)
		return
	}
	defer release()
	start := time.Now()
	s.log.InfoContext(ctx, "connected", who...)
	stats, err := relay.Pipe(ctx, conn, target, s.cfg.IdleTimeout)
	attrs := append(who,
		"bytes_to_target", stats.AToB,
		"bytes_from_target", stats.BToA,
		"duration", time.Since(start),
	)
	if err != nil && !isClosedErr(err) {
		attrs = append(attrs, "error", err)
	}
	s.log.InfoContext(ctx, "disconnected", attrs...)
}
