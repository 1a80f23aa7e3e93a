package runner

import (
	"archive/zip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
)

// TestFirefoxPolicy: the firefox kiosk's policies block every URL but the
// site's and the allowed hosts', fix the proxy (locked, loopback
// included), turn off what a kiosk must not have, and install the CA from
// the read-only distribution directory.
func TestFirefoxPolicy(t *testing.T) {
	k := &contract.KioskSpec{URL: "https://Hub.Example:8443/hub/", Allow: []string{"IdP.example:443", "[::1]:8443"}}
	pol, err := firefoxPolicy(k, []string{firefoxDist + "/ca-1.pem"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(pol)
	var got struct {
		WebsiteFilter struct{ Block, Exceptions []string }
		Proxy         struct {
			Mode, HTTPProxy, SSLProxy, Passthrough string
			Locked, UseHTTPProxyForAllProtocols    bool
		}
		DNSOverHTTPS      struct{ Enabled, Locked bool }
		ExtensionSettings map[string]map[string]string
		Certificates      struct{ Install []string }
		Preferences       map[string]struct {
			Value  any
			Status string
		}
		DownloadDirectory                             string
		DisableDeveloperTools, DisablePrivateBrowsing bool
		PrintingEnabled, AllowFileSelectionDialogs    bool
		BlockAboutConfig, BlockAboutAddons            bool
		DisableSecurityBypass                         map[string]bool
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.WebsiteFilter.Block, []string{"<all_urls>"}) ||
		!slices.Equal(got.WebsiteFilter.Exceptions, []string{"https://hub.example/*", "https://[::1]/*", "https://idp.example/*"}) {
		t.Errorf("WebsiteFilter: %+v", got.WebsiteFilter)
	}
	if p := got.Proxy; p.Mode != "manual" || p.HTTPProxy != "127.0.0.1:3128" || p.SSLProxy != "127.0.0.1:3128" ||
		p.Passthrough != "" || !p.Locked || !p.UseHTTPProxyForAllProtocols {
		t.Errorf("Proxy: %+v", p)
	}
	if h := got.Preferences["network.proxy.allow_hijacking_localhost"]; h.Value != true || h.Status != "locked" {
		t.Errorf("loopback not through the proxy: %+v", h)
	}
	if got.DNSOverHTTPS.Enabled || !got.DNSOverHTTPS.Locked {
		t.Errorf("DNSOverHTTPS: %+v", got.DNSOverHTTPS)
	}
	if got.ExtensionSettings["*"]["installation_mode"] != "blocked" {
		t.Errorf("ExtensionSettings: %v", got.ExtensionSettings)
	}
	if !got.DisableDeveloperTools || !got.DisablePrivateBrowsing || got.PrintingEnabled || got.AllowFileSelectionDialogs ||
		!got.BlockAboutConfig || !got.BlockAboutAddons || !got.DisableSecurityBypass["InvalidCertificate"] {
		t.Errorf("lock-down policies: %s", b)
	}
	if !strings.HasPrefix(got.DownloadDirectory, firefoxDist+"/") {
		t.Errorf("DownloadDirectory %q is not in the read-only bind", got.DownloadDirectory)
	}
	if !slices.Equal(got.Certificates.Install, []string{firefoxDist + "/ca-1.pem"}) {
		t.Errorf("Certificates: %v", got.Certificates)
	}
	if pol, _ := firefoxPolicy(k, nil); pol["Certificates"] != nil {
		t.Errorf("Certificates without a CA: %v", pol["Certificates"])
	}
}

// TestFirefoxPolicyNames: every policy the kiosk sets is one the
// installed firefox-esr knows (its schema in omni.ja): Firefox reports an
// unknown one in about:policies and applies nothing of it, so a misspelt
// name would be a hole no other test sees.
func TestFirefoxPolicyNames(t *testing.T) {
	omni := filepath.Join(filepath.Dir(firefoxDist), "browser", "omni.ja")
	z, err := zip.OpenReader(omni)
	if os.IsNotExist(err) {
		t.Skipf("%s not found: firefox-esr not installed (scripts/install-deps.sh installs it)", omni)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	f, err := z.Open("modules/policies/policies-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	var schema struct{ Properties map[string]json.RawMessage }
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	pol, err := firefoxPolicy(&contract.KioskSpec{URL: "https://hub.example/"}, []string{"/x.pem"})
	if err != nil {
		t.Fatal(err)
	}
	for name := range pol {
		if _, ok := schema.Properties[name]; !ok {
			t.Errorf("policy %s is not in firefox-esr's schema", name)
		}
	}
}
