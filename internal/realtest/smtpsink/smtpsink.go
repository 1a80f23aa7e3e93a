// Package smtpsink is an SMTP server on loopback for tests that keeps
// every message it is given: emersion's go-smtp server, speaking the real
// protocol with STARTTLS on a self-signed certificate, so the gateway's
// mailer talks to it as to a site's relay.
package smtpsink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the sink received.
type Message struct {
	From string
	To   []string
	Data string
}

// Sink is a running SMTP server.
type Sink struct {
	URL    string // smtp://127.0.0.1:PORT
	CAFile string // the certificate to trust
	Got    chan Message
}

type backend struct{ got chan Message }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sess{got: b.got}, nil }

type sess struct {
	got chan Message
	m   Message
}

func (s *sess) Mail(from string, _ *smtp.MailOptions) error { s.m.From = from; return nil }
func (s *sess) Rcpt(to string, _ *smtp.RcptOptions) error   { s.m.To = append(s.m.To, to); return nil }
func (s *sess) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.Data = string(b)
	s.got <- s.m
	s.m = Message{}
	return nil
}
func (s *sess) Reset()        { s.m = Message{} }
func (s *sess) Logout() error { return nil }

// Start runs a sink until the test ends.
func Start(tb testing.TB) *Sink {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	ca := filepath.Join(tb.TempDir(), "sink-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	got := make(chan Message, 64)
	srv := smtp.NewServer(backend{got: got})
	srv.Domain = "sink.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return &Sink{URL: "smtp://" + ln.Addr().String(), CAFile: ca, Got: got}
}

// Next waits up to d for the next message.
func (s *Sink) Next(tb testing.TB, d time.Duration) Message {
	tb.Helper()
	select {
	case m := <-s.Got:
		return m
	case <-time.After(d):
		tb.Fatalf("no message at the SMTP sink in %s", d)
		return Message{}
	}
}
