package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// rdpCA is one of the gateway's two certificate authorities for native
// RDP clients, kept in the state directory:
//
//   - the client CA ("rdp-client-ca") signs the certificates users get in
//     their .airlock files; only the gateway's RDP port trusts it;
//   - the hop CA ("rdp-hop-ca") signs the gateway's own client certificate
//     and each session's tls connector certificate; only tls connectors
//     trust it.
//
// Two CAs, not one, so that a user's certificate opens nothing but the
// gateway's port, where revocation, the session's state and the user's
// rights are checked on every connection: presented straight to a
// connector (a node's port is reachable from the cluster network) it is
// refused during the handshake.
type rdpCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

// loadOrMakeCA reads StateDir/NAME.pem and NAME.key, or makes them.
func loadOrMakeCA(dir, name, cn string) (*rdpCA, error) {
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, os.ErrNotExist) {
		if err := makeCA(certFile, keyFile, cn); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		certPEM, err = os.ReadFile(certFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s: %s or %s holds no PEM block", name, certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: %s is not an ECDSA key", name, keyFile)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &rdpCA{cert: cert, key: key, pem: certPEM, pool: pool}, nil
}

func makeCA(certFile, keyFile, cn string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(20 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// leaf is one certificate the CA issues, with its key, in PEM.
type leaf struct {
	certPEM, keyPEM []byte
	der             []byte
	serial          string
}

// issue signs a leaf certificate. For a client certificate cn is the user
// and session is put in a URI (airlock:session:ID); for a server
// certificate dnsName is the name the gateway verifies.
func (ca *rdpCA) issue(cn, sessionID, dnsName string, client bool, notBefore, notAfter time.Time) (leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return leaf{}, err
	}
	serial := randSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{dnsName}
	}
	if sessionID != "" {
		tmpl.URIs = []*url.URL{{Scheme: "airlock", Opaque: "session:" + sessionID}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return leaf{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return leaf{}, err
	}
	return leaf{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		der:     der,
		serial:  hex.EncodeToString(serial.Bytes()),
	}, nil
}

// certSession is the session a client certificate was issued for.
func certSession(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "airlock" {
			if id, ok := strings.CutPrefix(u.Opaque, "session:"); ok {
				return id
			}
		}
	}
	return ""
}

// rdpCertHash is what the store keeps for an issued client certificate
// (as a token's hash, so that revoking it is revoking a token). The
// prefix has a NUL, which no HTTP header can carry: the stored hash can
// never be matched by a bearer token an API client sends.
func rdpCertHash(der []byte) []byte {
	h := sha256.New()
	h.Write([]byte("airlock rdp certificate\x00"))
	h.Write(der)
	return h.Sum(nil)
}
