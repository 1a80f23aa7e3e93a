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
	"github.com/airlock-hpc/airlock/internal/seal"
)

// A firefox kiosk runs Debian's firefox-esr. It reads its enterprise
// policies from /etc/firefox/policies/policies.json if that exists (the
// build's SysConfD is /etc/firefox, not /etc/firefox-esr: checked with
// about:policies), else from distribution/policies.json in its install
// directory. The runner bind-mounts a per-session directory read-only
// over /usr/lib/firefox-esr/distribution in the seal, and, if the node
// has /etc/firefox/policies, an empty one over that, so the file read is
// always the session's.
//
// Firefox's WebsiteFilter takes WebExtension match patterns, which have a
// host but no port: the policy alone would let the kiosk open any port of
// the site's host. The egress proxy is what holds it to HOST:PORT; the
// filter is the second layer that keeps the window on the site's hosts.

// firefoxDist is firefox-esr's distribution directory (Debian's install
// directory is /usr/lib/firefox-esr).
const firefoxDist = "/usr/lib/firefox-esr/distribution"

// firefoxSysPolicies would override firefoxDist's policies.json.
const firefoxSysPolicies = "/etc/firefox/policies"

// firefoxNoDownloads is the download directory the policy fixes: a
// directory of the read-only bind, so no download can be written.
const firefoxNoDownloads = firefoxDist + "/no-downloads"

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
			// No location lookups: the proxy would refuse them, and each
			// would be an audited refusal.
			"geo.enabled":                   locked(false),
			"browser.region.update.enabled": locked(false),
			"browser.region.network.url":    locked(""),
		},
		"Certificates": map[string]any{"ImportEnterpriseRoots": false, "Install": caFiles},
	}
	if len(caFiles) == 0 {
		delete(pol, "Certificates")
	}
	return pol, nil
}

// prepareFirefox writes the session's distribution directory (policies
// and CA certificates) under dir and returns the binds that put it in
// place in the seal.
func prepareFirefox(k *contract.KioskSpec, dir string) ([]seal.Bind, error) {
	// The bind needs its target, which Debian's firefox-esr package
	// makes; say what is missing rather than fail in the seal's mounts.
	if fi, err := os.Stat(firefoxDist); err != nil || !fi.IsDir() {
		return nil, errors.New(firefoxDist + " is not a directory on this node: is firefox-esr installed?")
	}
	dist := filepath.Join(dir, "distribution")
	empty := filepath.Join(dir, "no-system-policies")
	noDownloads := filepath.Join(dist, "no-downloads")
	for _, d := range []string{dir, dist, noDownloads, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		// Readable by the owner in root mode: the modes of the
		// directory count through the bind, not its parents'.
		os.Chmod(d, 0o755)
	}
	// The package's search plugins are left out: a kiosk has no search.
	var caFiles []string
	if k.CAPEM != "" {
		cas, err := kioskCAs(k.CAPEM)
		if err != nil {
			return nil, err
		}
		for i, c := range cas {
			der, _ := base64.StdEncoding.DecodeString(c)
			name := fmt.Sprintf("ca-%d.pem", i+1)
			if err := os.WriteFile(filepath.Join(dist, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
				return nil, err
			}
			caFiles = append(caFiles, firefoxDist+"/"+name)
		}
	}
	pol, err := firefoxPolicy(k, caFiles)
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(map[string]any{"policies": pol}, "", "  ")
	if err := os.WriteFile(filepath.Join(dist, "policies.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("write policy: %w", err)
	}
	binds := []seal.Bind{{Source: dist, Target: firefoxDist}}
	if fi, err := os.Stat(firefoxSysPolicies); err == nil && fi.IsDir() {
		binds = append(binds, seal.Bind{Source: empty, Target: firefoxSysPolicies})
	} else if err == nil || !errors.Is(err, os.ErrNotExist) {
		// A file, or something we cannot look at: Firefox could read a
		// policies.json through it that we cannot hide.
		return nil, fmt.Errorf("%s is not a directory the kiosk can hide: %v", firefoxSysPolicies, err)
	}
	return binds, nil
}

// firefoxArgv starts firefox-esr on url in kiosk mode with the session's
// profile.
func firefoxArgv(url string) []string {
	return []string{"firefox-esr", "--kiosk", "--no-remote", "--new-instance",
		"--profile", kioskProfileDir + "/profile", url}
}
