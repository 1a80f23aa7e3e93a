package runner

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/egressproxy"
)

// A firefox kiosk runs Debian's firefox-esr. Its enterprise policies are
// read from SysConfD/policies/policies.json, SysConfD being /etc/firefox-esr
// for Debian's build (the file there wins over the install directory's
// distribution/policies.json), so the runner bind-mounts a per-session
// directory read-only over /etc/firefox-esr in the seal, as it does over
// /etc/chromium for Chromium.
//
// Firefox's WebsiteFilter takes WebExtension match patterns, which have a
// host but no port: the policy alone would let the kiosk open any port of
// the site's host. The egress proxy is what holds it to HOST:PORT; the
// filter is the second layer that keeps the window on the site's hosts.

// firefoxEtc is where firefox-esr looks for its system configuration.
const firefoxEtc = "/etc/firefox-esr"

// firefoxNoDownloads is the download directory the policy fixes: a
// directory of the read-only bind, so no download can be written.
const firefoxNoDownloads = firefoxEtc + "/no-downloads"

// firefoxHostPattern is the match pattern for every https URL on host.
func firefoxHostPattern(host string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "https://" + host + "/*"
}

// firefoxPolicy is firefox-esr's policies.json content for kiosk k, whose
// CA certificates (if any) are at caFiles inside the seal.
func firefoxPolicy(k *contract.KioskSpec, caFiles []string) (map[string]any, error) {
	_, target, err := kioskSite(k.URL)
	if err != nil {
		return nil, err
	}
	host, _, _ := egressproxy.SplitTarget(target)
	exceptions := []string{firefoxHostPattern(host)}
	for _, a := range k.Allow {
		h, _, err := egressproxy.SplitTarget(a)
		if err != nil {
			return nil, err
		}
		exceptions = append(exceptions, firefoxHostPattern(h))
	}
	slices.Sort(exceptions[1:])
	proxy := "127.0.0.1:" + strconv.Itoa(contract.KioskProxyPort)
	locked := func(v any) map[string]any { return map[string]any{"Value": v, "Status": "locked"} }
	pol := map[string]any{
		// Everything blocked (http, https, ws, wss, ftp, file, data) but
		// the site's hosts.
		"WebsiteFilter": map[string]any{"Block": []string{"<all_urls>"}, "Exceptions": exceptions},
		"Proxy": map[string]any{
			"Mode": "manual", "HTTPProxy": proxy, "SSLProxy": proxy,
			"UseHTTPProxyForAllProtocols": true, "UseProxyForDNS": true,
			// Nothing bypasses it: the seal's loopback has nothing the
			// kiosk should reach.
			"Passthrough": "", "Locked": true,
		},
		"DNSOverHTTPS":           map[string]any{"Enabled": false, "Locked": true},
		"DisableDeveloperTools":  true,
		"PrintingEnabled":        false,
		"DisablePrivateBrowsing": true,
		// No file chooser (uploads, "save as"), and downloads go without
		// asking to a directory no one can write: Firefox has no policy
		// that turns downloads off.
		"AllowFileSelectionDialogs":     false,
		"PromptForDownloadLocation":     false,
		"DownloadDirectory":             firefoxNoDownloads,
		"StartDownloadsInTempDirectory": false,
		"ExtensionSettings":             map[string]any{"*": map[string]any{"installation_mode": "blocked"}},
		"BlockAboutConfig":              true,
		"BlockAboutAddons":              true,
		"BlockAboutProfiles":            true,
		"BlockAboutSupport":             true,
		"DisableSecurityBypass":         map[string]any{"InvalidCertificate": true, "SafeBrowsing": true},
		"DisableTelemetry":              true,
		"DisableFirefoxStudies":         true,
		"DisableFirefoxAccounts":        true,
		"DisablePocket":                 true,
		"DisableFirefoxScreenshots":     true,
		"DisableProfileImport":          true,
		"DisableProfileRefresh":         true,
		"DisableSafeMode":               true,
		"DisableSetDesktopBackground":   true,
		"DisableFeedbackCommands":       true,
		"DisableAppUpdate":              true,
		"DisableSystemAddonUpdate":      true,
		"DisableFormHistory":            true,
		"PasswordManagerEnabled":        false,
		"OfferToSaveLogins":             false,
		"DontCheckDefaultBrowser":       true,
		"NoDefaultBookmarks":            true,
		"OverrideFirstRunPage":          "",
		"OverridePostUpdatePage":        "",
		"NewTabPage":                    false,
		"Homepage":                      map[string]any{"URL": k.URL, "Locked": true, "StartPage": "homepage-locked"},
		"UserMessaging": map[string]any{"WhatsNew": false, "ExtensionRecommendations": false,
			"FeatureRecommendations": false, "UrlbarInterventions": false, "SkipOnboarding": true,
			"MoreFromMozilla": false, "Locked": true},
		"Preferences": map[string]any{
			// Requests to the site on loopback go through the proxy too
			// (Firefox sends loopback direct unless told).
			"network.proxy.allow_hijacking_localhost": locked(true),
			"browser.sessionstore.resume_from_crash":  locked(false),
		},
		"Certificates": map[string]any{"ImportEnterpriseRoots": false, "Install": caFiles},
	}
	if len(caFiles) == 0 {
		delete(pol, "Certificates")
	}
	return pol, nil
}

// prepareFirefox writes the session's /etc/firefox-esr stand-in in etc:
// the package's own files, the policies and the CA certificates.
func prepareFirefox(k *contract.KioskSpec, etc string) error {
	// The bind needs its target, which Debian's firefox-esr package
	// makes; say what is missing rather than fail in the seal's mounts.
	if fi, err := os.Stat(firefoxEtc); err != nil || !fi.IsDir() {
		return errors.New(firefoxEtc + " is not a directory on this node: is firefox-esr installed?")
	}
	policies := filepath.Join(etc, "policies")
	noDownloads := filepath.Join(etc, "no-downloads")
	for _, d := range []string{etc, policies, noDownloads} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		// Readable by the owner in root mode: the modes of the
		// directory count through the bind, not its parents'.
		os.Chmod(d, 0o755)
	}
	// The package's preferences (firefox-esr.js), so the browser behaves
	// as the node's does otherwise.
	ents, _ := os.ReadDir(firefoxEtc)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(firefoxEtc, e.Name())); err == nil {
			if err := os.WriteFile(filepath.Join(etc, e.Name()), b, 0o644); err != nil {
				return err
			}
		}
	}
	var caFiles []string
	if k.CAPEM != "" {
		cas, err := kioskCAs(k.CAPEM)
		if err != nil {
			return err
		}
		for i, c := range cas {
			der, _ := base64.StdEncoding.DecodeString(c)
			name := fmt.Sprintf("ca-%d.pem", i+1)
			if err := os.WriteFile(filepath.Join(policies, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
				return err
			}
			caFiles = append(caFiles, firefoxEtc+"/policies/"+name)
		}
	}
	pol, err := firefoxPolicy(k, caFiles)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(map[string]any{"policies": pol}, "", "  ")
	if err := os.WriteFile(filepath.Join(policies, "policies.json"), b, 0o644); err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	return nil
}

// firefoxArgv starts firefox-esr on url in kiosk mode with the session's
// profile.
func firefoxArgv(url string) []string {
	return []string{"firefox-esr", "--kiosk", "--no-remote", "--new-instance",
		"--profile", kioskProfileDir + "/profile", url}
}
