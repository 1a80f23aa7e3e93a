package connector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// tlsExchange dials addr with cfg, sends "ping" and reads the 4-byte
// echo, returning the first error. In TLS 1.3 the client's handshake
// finishes before the server has checked the client's certificate, so a
// refusal may show only at the first read, as the server's alert.
func tlsExchange(addr string, cfg *tls.Config) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping" {
		return errors.New("echo mismatch: " + string(b))
	}
	return nil
}

// TestTLSConnector: only a client certificate from the session CA gets
// through to the target; anything else fails in the TLS handshake and the
// target never sees a connection.
func TestTLSConnector(t *testing.T) {
	sessionCA := newCA(t, "session CA")
	otherCA := newCA(t, "other CA")
	target := startTCPTarget(t, echo)
	logs, logger := newLogSink(t)
	addr, _ := startConnector(t, Config{Kind: KindTLS, Target: target.addr, TLS: sessionCA.mutualTLS(t, sessionCA), Logger: logger})

	good := sessionCA.issue(t, "alice", false)
	if err := tlsExchange(addr, sessionCA.clientTLS(good)); err != nil {
		t.Fatalf("good client certificate: %v", err)
	}
	logs.waitLine(t, "msg=disconnected", "user=alice", "mode=control", "bytes_to_target=4", "bytes_from_target=4", "duration=")

	for _, tt := range []struct {
		name   string
		cfg    *tls.Config
		alert  string
		inDial bool   // TLS 1.2: the client's own handshake fails
		cause  string // in the connector's log
	}{
		{"no certificate", sessionCA.clientTLS(), "certificate required", false, "didn't provide a certificate"},
		{"other CA", forceCert(sessionCA.clientTLS(), otherCA.issue(t, "mallory", false)), "unknown certificate authority", false, "unknown authority"},
		// The CA's server certificate (a connector's own, which its
		// session's user may be able to read) is not a client's.
		{"a connector's server certificate", forceCert(sessionCA.clientTLS(), sessionCA.issue(t, "connector", true)), "bad certificate", false, "incompatible key usage"},
		{"no certificate TLS 1.2", withMaxVersion(sessionCA.clientTLS(), tls.VersionTLS12), "handshake failure", true, "didn't provide a certificate"},
		{"other CA TLS 1.2", withMaxVersion(forceCert(sessionCA.clientTLS(), otherCA.issue(t, "mallory", false)), tls.VersionTLS12), "unknown certificate authority", true, "unknown authority"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tlsExchange(addr, tt.cfg)
			if err == nil {
				t.Fatal("relayed without a valid client certificate")
			}
			if !strings.Contains(err.Error(), "remote error: tls: "+tt.alert) {
				t.Fatalf("error %q, want the server's %q alert", err, tt.alert)
			}
			var opErr *net.OpError
			if tt.inDial && (!errors.As(err, &opErr) || opErr.Op != "remote error") {
				t.Fatalf("error %v: want it from the handshake", err)
			}
			logs.waitLine(t, "msg=refused", `reason="TLS handshake failed"`, tt.cause)
		})
	}
	if n := target.accepted.Load(); n != 1 {
		t.Fatalf("target saw %d connections, want only the good one", n)
	}
}

// forceCert makes the client present cert even though the server's
// CertificateRequest names other CAs (Go's client would send nothing).
func forceCert(c *tls.Config, cert tls.Certificate) *tls.Config {
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return c
}

func withMaxVersion(c *tls.Config, v uint16) *tls.Config {
	c.MaxVersion = v
	return c
}

// TestBulkEcho sends several megabytes through the tls kind and through
// vnc over TLS to an echo target, writing and reading at once in uneven
// pieces, and checks every byte comes back in order. Both batch the TLS
// records of a write into one write(2) (trackedConn.startBatch); a record
// out of order would fail its MAC.
func TestBulkEcho(t *testing.T) {
	ca := newCA(t, "session CA")
	k := newKey(t)
	_, logger := newLogSink(t)
	target := startTCPTarget(t, echo)
	tlsAddr, _ := startConnector(t, Config{Kind: KindTLS, Target: target.addr, TLS: ca.mutualTLS(t, ca), Logger: logger})
	rfbTarget := startTCPTarget(t, rfbOpening(echo))
	vncAddr, _ := startConnector(t, Config{Kind: KindVNC, Target: rfbTarget.addr, Key: k, TLS: ca.serverTLS(t), Logger: logger})

	tc, err := tls.Dial("tcp", tlsAddr, ca.clientTLS(ca.issue(t, "alice", false)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	vc := wsDial{tls: ca.clientTLS()}.mustDial(t, vncAddr, mint(t, k, ticket.Control))
	rfbHello(t, vc)

	for name, c := range map[string]net.Conn{"tls": tc, "vnc-tls": vc} {
		t.Run(name, func(t *testing.T) {
			const total = 6<<20 + 3
			sent := make([]byte, total)
			for i := range sent {
				sent[i] = byte(i*7 + i>>13)
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			werr := make(chan error, 1)
			go func() {
				for off, n := 0, 1; off < total; off, n = off+n, n*3%(300<<10)+1 {
					if _, err := c.Write(sent[off:min(off+n, total)]); err != nil {
						werr <- err
						return
					}
				}
				werr <- nil
			}()
			got := make([]byte, total)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, sent) {
				i := 0
				for got[i] == sent[i] {
					i++
				}
				t.Fatalf("echo differs from byte %d on", i)
			}
		})
	}
}

// TestTLSConnectorWaitsForTarget: a target that refuses connections when
// a client arrives (xrdp starting after the session is ready) is dialled
// again until it listens, and the client's connection goes through.
func TestTLSConnectorWaitsForTarget(t *testing.T) {
	ca := newCA(t, "session CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close() // refused until it listens again below
	addr, _ := startConnector(t, Config{Kind: KindTLS, Target: target, TLS: ca.mutualTLS(t, ca)})

	d := tls.Dialer{Config: ca.clientTLS(ca.issue(t, "alice", false))}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	// Time for the connector to meet the refusal first. (A shorter wait
	// only makes the test weaker, never wrong: the echo must come.)
	time.Sleep(300 * time.Millisecond)
	ln, err = net.Listen("tcp", target)
	if err != nil {
		t.Skipf("the target's port was taken meanwhile: %v", err)
	}
	defer ln.Close()
	go func() {
		tc, err := ln.Accept()
		if err != nil {
			return
		}
		defer tc.Close()
		echo(tc)
	}()
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo through a target that came up late: %q %v", b, err)
	}
}
