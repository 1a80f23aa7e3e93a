package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTransportToNode: a connector on another node is reached over TLS
// pinned to the session certificate's SHA-256 (one TLS layer, not two),
// and a certificate that does not match the pin is refused.
func TestTransportToNode(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "session"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from the node")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	defer srv.Close()
	sum := sha256.Sum256(der)
	pin := hex.EncodeToString(sum[:])
	g := &Gateway{}
	endpoint := srv.Listener.Addr().String()

	get := func(pin string) (string, error) {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://session/", nil)
		resp, err := g.newTransport(endpoint, pin).RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if body, err := get(pin); err != nil || body != "from the node" {
		t.Fatalf("pinned TLS to the node: %q, %v", body, err)
	}
	if _, err := get(hex.EncodeToString(make([]byte, 32))); err == nil {
		t.Fatal("a certificate that is not the pinned one was accepted")
	}
}
