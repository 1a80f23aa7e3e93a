package runner

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/egressproxy"
)

func certPEM(t *testing.T, ca bool) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: ca, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestKioskSpecErrors: each bad kiosk is refused, naming the field.
func TestKioskSpecErrors(t *testing.T) {
	base := func(k string, egress string) string {
		return `{"id":"k1","workload":{"argv":["Xvnc"]},"egress":[` + egress + `],"kiosk":` + k + `}`
	}
	leaf := certPEM(t, false)
	cases := map[string]string{
		base(`{"url":"ftp://hub/"}`, ""):                                "kiosk.url",
		base(`{"url":"https://u:p@hub.example/"}`, ""):                  "kiosk.url",
		base(`{"url":"https:///x"}`, ""):                                "kiosk.url",
		base(`{"url":"https://hub.example/","browser":"lynx"}`, ""):     "kiosk.browser",
		base(`{"url":"https://hub.example/","allow":["idp"]}`, ""):      "kiosk.allow[0]",
		base(`{"url":"https://hub.example/","ca_pem":"junk"}`, ""):      "kiosk.ca_pem",
		base(`{"url":"https://hub.example/","ca_pem":`+q(leaf)+`}`, ""): "not a CA",
		base(`{"url":"https://hub.example/","display":"host:1"}`, ""):   "kiosk.display",
		base(`{"url":"https://hub.example/","geometry":"0x1"}`, ""):     "kiosk.geometry",
		base(`{"url":"https://hub.example/"}`, `"db.example:3128"`):     "3128",
	}
	for in, want := range cases {
		_, err := ParseSpec(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error about %s", in, err, want)
		}
	}
	if _, err := ParseSpec(strings.NewReader(base(`{"url":"https://hub.example/","browser":"firefox"}`, ""))); err != nil {
		t.Errorf("a firefox kiosk: %v", err)
	}
	if _, err := ParseSpec(strings.NewReader(base(`{"url":"https://Hub.Example:8443/x","allow":["idp.example:443"],"ca_pem":`+q(certPEM(t, true))+`}`, ""))); err != nil {
		t.Fatalf("a good kiosk: %v", err)
	}
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestKioskPolicy: the policy blocks every URL but the site's origin and
// the allowed hosts' https origins, turns off what a kiosk must not have,
// fixes the proxy (loopback included) and carries the CA.
func TestKioskPolicy(t *testing.T) {
	ca := certPEM(t, true)
	k := &contract.KioskSpec{URL: "https://Hub.Example:8443/hub/", Allow: []string{"IdP.example:443"}, CAPEM: ca}
	origin, target, err := kioskSite(k.URL)
	if err != nil || origin != "https://hub.example:8443" || target != "hub.example:8443" {
		t.Fatalf("kioskSite: %q %q %v", origin, target, err)
	}
	pol, err := kioskPolicy(k, origin)
	if err != nil {
		t.Fatal(err)
	}
	// Present, with exactly these values (a missing key is the browser's
	// default, which is the open one).
	for key, want := range map[string]any{
		"DeveloperToolsAvailability": 2, "DownloadRestrictions": 3, "PrintingEnabled": false,
		"IncognitoModeAvailability": 1, "BrowserGuestModeEnabled": false, "AllowFileSelectionDialogs": false,
		"SSLErrorOverrideAllowed": false, "BrowserAddPersonEnabled": false, "DefaultPopupsSetting": 2,
	} {
		if got, ok := pol[key]; !ok || got != want {
			t.Errorf("policy %s = %v (set: %v), want %v", key, got, ok, want)
		}
	}
	b, _ := json.Marshal(pol)
	var got struct {
		URLBlocklist, URLAllowlist, ExtensionInstallBlocklist, CACertificates       []string
		DeveloperToolsAvailability, DownloadRestrictions, IncognitoModeAvailability int
		PrintingEnabled, AllowFileSelectionDialogs, SSLErrorOverrideAllowed         bool
		ProxySettings                                                               map[string]string
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.URLBlocklist, []string{"*"}) || !slices.Equal(got.URLAllowlist, []string{"https://hub.example:8443", "https://idp.example"}) {
		t.Errorf("URL lists: block %v allow %v", got.URLBlocklist, got.URLAllowlist)
	}
	if got.DeveloperToolsAvailability != 2 || got.DownloadRestrictions != 3 || got.IncognitoModeAvailability != 1 ||
		got.PrintingEnabled || got.AllowFileSelectionDialogs || got.SSLErrorOverrideAllowed || !slices.Equal(got.ExtensionInstallBlocklist, []string{"*"}) {
		t.Errorf("lock-down policies: %s", b)
	}
	if got.ProxySettings["ProxyServer"] != "127.0.0.1:3128" || got.ProxySettings["ProxyBypassList"] != "<-loopback>" {
		t.Errorf("proxy: %v", got.ProxySettings)
	}
	blk, _ := pem.Decode([]byte(ca))
	if len(got.CACertificates) != 1 || !bytes.Contains(b, []byte(got.CACertificates[0])) || got.CACertificates[0] == "" || blk == nil {
		t.Errorf("CACertificates: %v", got.CACertificates)
	}
}

// TestEgressAuditLimit: past egressAuditRate decisions a minute, the rest
// are counted, and reported as one event when the next minute starts.
func TestEgressAuditLimit(t *testing.T) {
	var out bytes.Buffer
	r := &run{spec: &Spec{ID: "k1"}, cfg: Config{Stdout: &out}}
	now := time.Unix(1000, 0)
	a := newEgressAudit(r, func() time.Time { return now })
	for range egressAuditRate + 50 {
		a.report(egressproxy.Decision{Target: "x.example:443", Verdict: egressproxy.Refuse})
	}
	if n := strings.Count(out.String(), "\n"); n != egressAuditRate {
		t.Fatalf("%d events in the first minute, want %d", n, egressAuditRate)
	}
	now = now.Add(time.Minute)
	a.report(egressproxy.Decision{Target: "hub.example:443", Verdict: egressproxy.Allow})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != egressAuditRate+2 || !strings.Contains(lines[egressAuditRate], `"verdict":"suppressed"`) ||
		!strings.Contains(lines[egressAuditRate], "50 egress decisions") || !strings.Contains(lines[egressAuditRate+1], "hub.example:443") {
		t.Fatalf("after the minute: %q", lines[egressAuditRate:])
	}
}
