package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store"
)

// kioskSite is an HTTPS server on loopback (a stand-in JupyterHub) with a
// certificate from a CA of its own, whose PEM it returns for the profile's
// ca_file.
func kioskSite(t *testing.T) (addr string, caPEM []byte, hits *atomic.Int64) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiosk test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	hits = &atomic.Int64{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "<!doctype html><title>hub</title><p>hub")
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), hits
}

// TestKioskThroughGateway launches a kiosk profile through the API of a
// real gateway (local backend, real runner, Xvnc and Chromium): the
// browser reaches the site through the proxy, trusting the CA from the
// profile's ca_file, and the proxy's decisions land in the gateway's
// audit log; stopping the session ends it.
func TestKioskThroughGateway(t *testing.T) {
	for _, bin := range []string{"Xvnc", "chromium"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", bin)
		}
	}
	site, caPEM, hits := kioskSite(t)
	caFile := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Profiles = append(c.Profiles, Profile{Name: "hub", Title: "Hub", Kind: "desktop", Geometry: "640x480",
			CPUs: 1, MaxCPUs: 1, MemoryMB: 1024, MaxMemoryMB: 2048, Lifetime: time.Hour, MaxLifetime: time.Hour,
			Kiosk: &Kiosk{URL: "https://" + site + "/hub/", Browser: "chromium", CAFile: caFile}})
	}, "alice")
	c := tg.client().loginToken("alice")
	s := c.launch("hub")

	var audits []string
	err := realtest.WaitFor(60*time.Second, func() error {
		evs, err := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Session: s.ID, Limit: 100})
		if err != nil {
			return err
		}
		audits = audits[:0]
		for _, e := range evs {
			if e.Action == "egress" {
				audits = append(audits, e.Detail)
			}
		}
		for _, d := range audits {
			if d == "allow "+site && hits.Load() > 0 {
				return nil
			}
		}
		return fmt.Errorf("site requests %d, egress audit %q", hits.Load(), audits)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Chromium's own background requests (updates, field trials) are
	// refused and audited too.
	for _, d := range audits {
		if !strings.HasPrefix(d, "allow "+site) && !strings.HasPrefix(d, "refuse ") {
			t.Errorf("unexpected egress audit %q", d)
		}
	}
	if code, body := c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code/100 != 2 {
		t.Fatalf("stop: %d %s", code, body)
	}
	c.waitState(s.ID, "ended")
}

// TestSlurmKiosk: a kiosk session run as a Slurm job reports its proxy's
// decisions by egress registrations, in batches, and each lands in the
// audit log; an egress registration with another session's token, or
// with too many decisions, is refused and audits nothing.
func TestSlurmKiosk(t *testing.T) {
	for _, bin := range []string{"Xvnc", "chromium"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", bin)
		}
	}
	t.Parallel()
	cl := realtest.SlurmCluster(t)
	site, caPEM, hits := kioskSite(t)
	caFile := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tg, _ := slurmGatewayWith(t, cl, t.TempDir(), 0, func(c *Config) {
		c.Profiles = append(c.Profiles, Profile{Name: "hub", Title: "Hub", Kind: "desktop", Geometry: "640x480",
			CPUs: 1, MemoryMB: 1024, Lifetime: time.Hour,
			Kiosk: &Kiosk{URL: "https://" + site + "/hub/", Browser: "chromium", CAFile: caFile}})
	}, "alice")
	c := tg.client().loginToken("alice")
	s := c.start(map[string]any{"profile": "hub"})
	c.waitStateFor(s.ID, "ready", 90*time.Second)

	egressAudits := func() []string {
		evs, err := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Session: s.ID, Limit: 200})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if e.Action == "egress" {
				out = append(out, e.Detail)
			}
		}
		return out
	}
	err := realtest.WaitFor(60*time.Second, func() error {
		for _, d := range egressAudits() {
			if d == "allow "+site && hits.Load() > 0 {
				return nil
			}
		}
		return fmt.Errorf("site requests %d, egress audit %q", hits.Load(), egressAudits())
	})
	if err != nil {
		t.Fatal(err)
	}

	before := len(egressAudits())
	forged := `{"event":"egress","egress":[{"target":"planted.example:443","verdict":"allow"}]}`
	if code, body := register(t, tg, s.ID, tg.g.registerToken("s-000000000000"), "", forged); code != 403 {
		t.Errorf("egress registration with another session's token: %d %s", code, body)
	}
	many := `{"event":"egress","egress":[` + strings.TrimSuffix(strings.Repeat(`{"verdict":"refuse"},`, 257), ",") + `]}`
	if code, body := register(t, tg, s.ID, tg.g.registerToken(s.ID), "", many); code != 400 {
		t.Errorf("egress registration of 257 decisions: %d %s", code, body)
	}
	for _, d := range egressAudits()[before:] {
		if strings.Contains(d, "planted") {
			t.Errorf("a refused egress registration was audited: %q", d)
		}
	}
	if code, _ := c.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d", code)
	}
	c.waitStateFor(s.ID, "ended", 60*time.Second)
}
