package runner_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/ticket"
	"github.com/coder/websocket"
)

// TestWebAppThroughHTTPConnector: a web app inside a seal, on TCP and on a
// UNIX socket, reached through http connectors listening on TCP (TLS) and on
// a UNIX socket: the ticket becomes a cookie, neither reaches the app, and
// WebSocket upgrades go through.
func TestWebAppThroughHTTPConnector(t *testing.T) {
	m := modes(t)[len(modes(t))-1]
	key := filepath.Join(realtest.SharedDir(t, m.owner), "key")
	realtest.WriteFile(t, m.owner, key, testKey, 0o600)
	sockDir := realtest.SharedDir(t, m.owner)
	id := fmt.Sprintf("web-%d", time.Now().UnixNano()%1e6)
	r := realtest.StartRunner(t, map[string]any{
		"id": id, "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{realtest.Probe(t), "serve", "http:tcp:127.0.0.1:8888", "http:unix:/tmp/app.sock"}},
		"connectors": []any{
			map[string]any{"name": "web", "kind": "http", "target": "127.0.0.1:8888", "listen": "tcp:127.0.0.1:0"},
			map[string]any{"name": "sock", "kind": "http", "target": "unix:/tmp/app.sock", "listen": "unix:" + sockDir + "/web.sock"},
		},
		"ticket_key_file": key,
	}, realtest.RunOptions{As: m.as})

	for _, c := range []struct{ name, base string }{
		{"web", "https://" + r.Ready.Endpoints["web"]},
		{"sock", "http://session"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ep := r.Ready.Endpoints[c.name]
			tr := &http.Transport{TLSClientConfig: realtest.PinnedTLS(r.Ready.TLSSHA256)}
			if p, ok := strings.CutPrefix(ep, "unix:"); ok {
				tr = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", p)
				}}
			}
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Transport: tr, Jar: jar, Timeout: 10 * time.Second}

			resp, err := client.Get(c.base + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("no ticket: status %d, want 401", resp.StatusCode)
			}

			tok := sign(t, ticket.Claims{Session: id, Connector: c.name, User: "alice", Mode: ticket.Control})
			resp, err = client.Get(c.base + "/hello?x=1&ticket=" + tok)
			if err != nil {
				t.Fatal(err)
			}
			var seen map[string]string
			json.NewDecoder(resp.Body).Decode(&seen)
			resp.Body.Close()
			if resp.StatusCode != 200 || seen["path"] != "/hello" || seen["query"] != "x=1" {
				t.Fatalf("status %d, app saw %v", resp.StatusCode, seen)
			}
			if strings.Contains(seen["cookie"], "airlock_") || strings.Contains(seen["query"], "ticket") {
				t.Fatalf("the app saw airlock's credentials: %v", seen)
			}

			ws, _, err := websocket.Dial(t.Context(), strings.Replace(c.base, "http", "ws", 1)+"/ws", &websocket.DialOptions{HTTPClient: client})
			if err != nil {
				t.Fatalf("WebSocket through the connector: %v", err)
			}
			defer ws.CloseNow()
			ws.Write(t.Context(), websocket.MessageText, []byte("ping through the seal"))
			_, b, err := ws.Read(t.Context())
			if err != nil || string(b) != "ping through the seal" {
				t.Fatalf("echo %q, %v", b, err)
			}
		})
	}
}

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key, PEM-encoded.
func (ca *testCA) issue(t testing.TB, cn string, server bool) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestRDPPathThroughTLSConnector: the tls connector (for native RDP
// clients) relays to the service inside the seal only for a client whose
// certificate the session's client CA signed; no certificate, or one from
// another CA, fails in the handshake and nothing reaches the service.
func TestRDPPathThroughTLSConnector(t *testing.T) {
	m := modes(t)[len(modes(t))-1]
	dir := realtest.SharedDir(t, m.owner)
	serverCA, clientCA, otherCA := newCA(t, "session CA"), newCA(t, "clients CA"), newCA(t, "someone else's CA")
	sc, sk := serverCA.issue(t, "session", true)
	realtest.WriteFile(t, m.owner, dir+"/session.crt", sc, 0o600)
	realtest.WriteFile(t, m.owner, dir+"/session.key", sk, 0o600)
	realtest.WriteFile(t, m.owner, dir+"/clients-ca.crt", clientCA.pem, 0o600)
	r := realtest.StartRunner(t, map[string]any{
		"id": "rdp-test", "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{realtest.Probe(t), "serve", "tcp:127.0.0.1:3389"}},
		"connectors": []any{map[string]any{
			"name": "rdp", "kind": "tls", "target": "127.0.0.1:3389", "listen": "tcp:127.0.0.1:0", "wait": true,
		}},
		"tls": map[string]string{"cert_file": dir + "/session.crt", "key_file": dir + "/session.key", "client_ca_file": dir + "/clients-ca.crt"},
	}, realtest.RunOptions{As: m.as})
	ep := r.Ready.Endpoints["rdp"]
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)

	try := func(cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if cert != nil {
			// Present it whatever CAs the server asks for: an attacker would.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ep, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// With TLS 1.3 the server judges the client certificate after the
		// client's handshake is done: the refusal arrives on first read.
		if _, err := c.Write([]byte("rdp-hello")); err != nil {
			return err
		}
		buf := make([]byte, 9)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "rdp-hello" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	}
	good, gk := clientCA.issue(t, "alice", false)
	goodCert, _ := tls.X509KeyPair(good, gk)
	if err := try(&goodCert); err != nil {
		t.Fatalf("client with a certificate from the session's client CA: %v", err)
	}
	if err := try(nil); err == nil {
		t.Fatal("client without a certificate got through")
	} else {
		t.Logf("no certificate: %v", err)
	}
	bad, bk := otherCA.issue(t, "mallory", false)
	badCert, _ := tls.X509KeyPair(bad, bk)
	if err := try(&badCert); err == nil {
		t.Fatal("client with a certificate from another CA got through")
	} else {
		t.Logf("other CA: %v", err)
	}
}

// TestTLSConnectorInlineCA is a tls connector as a remote backend's runner
// gets it (issue 11): the client CA inline in the spec (client_ca_pem), no
// certificate files, a TCP listener: the runner makes the certificate, the
// client pins it by the ready event's SHA-256, and only the CA's clients
// pass.
func TestTLSConnectorInlineCA(t *testing.T) {
	m := modes(t)[len(modes(t))-1]
	clientCA, otherCA := newCA(t, "clients CA"), newCA(t, "someone else's CA")
	r := realtest.StartRunner(t, map[string]any{
		"id": "rdp-inline", "owner": m.owner.Name,
		"workload": map[string]any{"argv": []string{realtest.Probe(t), "serve", "tcp:127.0.0.1:3389"}},
		"connectors": []any{map[string]any{
			"name": "rdp", "kind": "tls", "target": "127.0.0.1:3389", "listen": "tcp:127.0.0.1:0", "wait": true,
		}},
		"tls": map[string]string{"client_ca_pem": string(clientCA.pem)},
	}, realtest.RunOptions{As: m.as})
	ep, sha := r.Ready.Endpoints["rdp"], r.Ready.TLSSHA256
	try := func(cert *tls.Certificate) error {
		cfg := realtest.PinnedTLS(sha)
		if cert != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ep, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("rdp-hello")); err != nil {
			return err
		}
		buf := make([]byte, 9)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		return nil
	}
	good, gk := clientCA.issue(t, "airlock gateway", false)
	goodCert, _ := tls.X509KeyPair(good, gk)
	if err := try(&goodCert); err != nil {
		t.Fatalf("client of the inline CA: %v", err)
	}
	bad, bk := otherCA.issue(t, "mallory", false)
	badCert, _ := tls.X509KeyPair(bad, bk)
	if err := try(&badCert); err == nil {
		t.Fatal("client with a certificate from another CA got through")
	}
	if err := try(nil); err == nil {
		t.Fatal("client without a certificate got through")
	}
}
