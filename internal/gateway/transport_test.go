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
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
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

// TestProxyToNodeEndpoint: the whole proxy path to a session whose
// connector is on another node (TCP, TLS pinned by the session's
// SHA-256). The request must arrive once, over one TLS layer, with the
// gateway's ticket and without the user's token.
func TestProxyToNodeEndpoint(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "session"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	var gotAuth string
	node := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		io.WriteString(w, "from the node: "+r.URL.Path)
	}))
	node.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	node.StartTLS()
	defer node.Close()
	sum := sha256.Sum256(der)

	tg := startGateway(t, "", nil, "alice")
	c := tg.client().loginToken("alice")
	now := time.Now()
	s := &session.Session{ID: "s-remote", Owner: "alice", Profile: "app", State: session.Ready, Persistent: true,
		Created: now, Started: now, Backend: "remote", Endpoints: map[string]string{"app": node.Listener.Addr().String()},
		TLSSHA256: hex.EncodeToString(sum[:])}
	if err := tg.cfg.Store.CreateSession(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	code, body := c.do("GET", "/s/s-remote/app/x", nil, nil)
	if code != 200 || body != "from the node: /x" {
		t.Fatalf("proxy to a node's TLS endpoint: %d %q", code, body)
	}
	if !strings.HasPrefix(gotAuth, "Bearer v1.") || strings.Contains(gotAuth, c.token) {
		t.Fatalf("the node saw Authorization %q; want the gateway's ticket, not the user's token", gotAuth)
	}
}
