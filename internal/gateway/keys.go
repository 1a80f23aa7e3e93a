package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// masterKey loads the gateway's secret from the state directory, making it
// on first start. Every session's ticket key and the login cookies derive
// from it, so it never leaves the state directory.
func masterKey(stateDir string) ([]byte, error) {
	p := filepath.Join(stateDir, "master.key")
	b, err := os.ReadFile(p)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("master key %s: want 32 bytes, have %d", p, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("master key: %w", err)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := writeNew(p, b); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return b, nil
}

// writeNew creates p with data, 0600, failing if it exists.
func writeNew(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// derive returns HMAC-SHA256(master, label \0 id): one key per purpose and
// session, so a key leaked from one session's node opens nothing else.
func derive(master []byte, label, id string) [32]byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(id))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

func (g *Gateway) sessionKey(id string) ticket.Key {
	return ticket.Key(derive(g.master, "airlock session ticket key", id))
}

// loadOrMakeTLS returns the configured certificate, or a self-signed one
// made on first start and kept in the state directory. The self-signed one
// also names *.appsDomain, the app hosts; one kept from before that lacks
// it is made again.
func loadOrMakeTLS(certFile, keyFile, stateDir, appsDomain string) (tls.Certificate, error) {
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load TLS certificate: %w", err)
		}
		return c, nil
	}
	certFile, keyFile = filepath.Join(stateDir, "tls.crt"), filepath.Join(stateDir, "tls.key")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if appsDomain == "" || c.Leaf != nil && c.Leaf.VerifyHostname("s-0."+appsDomain) == nil {
			return c, nil
		}
		// Made before the app hosts: replace it (it was self-signed;
		// browsers asked to trust it once and will ask again).
		if err := errors.Join(os.Remove(certFile), os.Remove(keyFile)); err != nil {
			return tls.Certificate{}, fmt.Errorf("replace the self-signed certificate: %w", err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "airlock gateway " + host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames("localhost", host, "*."+appsDomain),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if err := writeNew(keyFile, keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS key: %w", err)
	}
	if err := writeNew(certFile, certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}

// dnsNames drops the empty and the repeated names.
func dnsNames(names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" && n != "*." && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
