package runner

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/egressproxy"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/seal"
)

// A kiosk session (spec.kiosk) is a desktop whose only program is one
// browser window. Three things hold it to its site, each on its own:
//
//   - Browser policy, written per session and bind-mounted read-only over
//     /etc/chromium inside the seal (Chromium reads its managed policies
//     from a path compiled in, and ignores --policy): every URL blocked
//     but the site's origin, no devtools, downloads, printing, extensions,
//     incognito or guest windows, and the proxy fixed.
//   - The seal's network namespace: nothing gets out but the egress
//     relay's ports, and no DNS.
//   - The runner's egress proxy (internal/egressproxy), reached as
//     127.0.0.1:KioskProxyPort inside through the egress relay, which
//     tunnels only to the site's HOST:PORT and the spec's allow-list,
//     resolving names itself, and reports every decision as an egress
//     event (audited by the gateway).
//
// The browser is an essential helper: it starts once the X server
// answers, and its exit (the window closed, the process killed) ends the
// session.

// kioskDisplayRE: an X display on this machine, as the desktop's Xvnc has.
var kioskDisplayRE = regexp.MustCompile(`^:[0-9]{1,3}$`)

// kioskGeometryRE: the X screen's size.
var kioskGeometryRE = regexp.MustCompile(`^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$`)

// kioskProfileDir is the browser's profile (and HOME) in the seal's
// private /tmp: nothing of the session is left in the owner's home.
const kioskProfileDir = "/tmp/.airlock-kiosk"

// kioskPolicyFile is the one file in managed/: Chromium merges every file
// there, so there must be no other.
const kioskPolicyFile = "airlock-kiosk.json"

// validateKiosk checks spec.kiosk; egress are the spec's own egress ports.
func validateKiosk(k *contract.KioskSpec, egress map[int]bool) error {
	if k.Browser != "" && !slices.Contains(contract.KioskBrowsers, k.Browser) {
		return fmt.Errorf("spec: kiosk.browser %q: want one of %v", k.Browser, contract.KioskBrowsers)
	}
	if _, _, err := kioskSite(k.URL); err != nil {
		return fmt.Errorf("spec: kiosk.url %q: %w", k.URL, err)
	}
	for i, a := range k.Allow {
		if _, _, err := egressproxy.SplitTarget(a); err != nil {
			return fmt.Errorf("spec: kiosk.allow[%d] %q: %w", i, a, err)
		}
	}
	if k.CAPEM != "" {
		if _, err := kioskCAs(k.CAPEM); err != nil {
			return fmt.Errorf("spec: kiosk.ca_pem: %w", err)
		}
	}
	if k.Display != "" && !kioskDisplayRE.MatchString(k.Display) {
		return fmt.Errorf("spec: kiosk.display %q: want :N", k.Display)
	}
	if k.Geometry != "" && !kioskGeometryRE.MatchString(k.Geometry) {
		return fmt.Errorf("spec: kiosk.geometry %q: want WIDTHxHEIGHT", k.Geometry)
	}
	if egress[contract.KioskProxyPort] {
		return fmt.Errorf("spec: egress: port %d is the kiosk's proxy inside the seal", contract.KioskProxyPort)
	}
	return nil
}

// kioskSite is the kiosk URL's origin (what the policy allows) and its
// HOST:PORT (what the proxy lets through).
func kioskSite(raw string) (origin, target string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", errors.New("not a URL")
	}
	// https only: the proxy tunnels (CONNECT), it does not forward plain
	// HTTP, which Chromium would send it as proxy GETs.
	if u.Scheme != "https" {
		return "", "", errors.New("want an https:// URL (the kiosk's proxy only tunnels TLS)")
	}
	port := cmp.Or(u.Port(), "443")
	if u.User != nil || u.Opaque != "" {
		return "", "", errors.New("want scheme://host[:port]/path, without a user")
	}
	host, p, err := egressproxy.SplitTarget(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", "", err
	}
	target = egressproxy.JoinTarget(host, p)
	return httpsOrigin(host, p), target, nil
}

// httpsOrigin is the URL filter the policy allows for host and port: with
// the port unless it is 443, which a URL leaves out (and a filter without
// a port matches on any port; the proxy still lets only 443 through).
func httpsOrigin(host string, port int) string {
	if port == 443 {
		if strings.Contains(host, ":") {
			return "https://[" + host + "]"
		}
		return "https://" + host
	}
	return "https://" + egressproxy.JoinTarget(host, port)
}

// kioskCAs decodes the CA certificates a kiosk trusts, as the base64 DER
// the CACertificates policy takes.
func kioskCAs(pemText string) ([]string, error) {
	var out []string
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %s block: only CERTIFICATE blocks", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA", len(out)+1, c.Subject)
		}
		out = append(out, base64.StdEncoding.EncodeToString(b.Bytes))
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// kioskPolicy is the browser's managed policy for a kiosk on origin that
// may also reach the https origins of allow.
func kioskPolicy(k *contract.KioskSpec, origin string) (map[string]any, error) {
	allowed := []string{origin}
	for _, a := range k.Allow {
		h, p, _ := egressproxy.SplitTarget(a)
		allowed = append(allowed, httpsOrigin(h, p))
	}
	pol := map[string]any{
		"URLBlocklist": []string{"*"},
		"URLAllowlist": slices.Compact(allowed),
		// 2: devtools blocked everywhere.
		"DeveloperToolsAvailability": 2,
		// 3: every download blocked.
		"DownloadRestrictions":      3,
		"PrintingEnabled":           false,
		"IncognitoModeAvailability": 1, // 1: incognito off
		"BrowserGuestModeEnabled":   false,
		"BrowserAddPersonEnabled":   false,
		"AllowFileSelectionDialogs": false,
		"ExtensionInstallBlocklist": []string{"*"},
		"PasswordManagerEnabled":    false,
		"BrowserSignin":             0,
		"SyncDisabled":              true,
		"DefaultPopupsSetting":      2, // no pop-up windows
		// No preconnecting to a link's host on hover or mouse-down:
		// the proxy would be asked for (and refuse, and report) hosts
		// the policy blocks anyway.
		"NetworkPredictionOptions": 2,
		"TranslateEnabled":         false,
		"MetricsReportingEnabled":  false,
		"BackgroundModeEnabled":    false,
		"DnsOverHttpsMode":         "off",
		"ScreenCaptureAllowed":     false,
		// No "proceed anyway" past a certificate warning: the site's
		// TLS is the kiosk's guard against anyone between it and the
		// proxy's destination.
		"SSLErrorOverrideAllowed": false,
		"ProxySettings": map[string]any{
			"ProxyMode":   "fixed_servers",
			"ProxyServer": "127.0.0.1:" + strconv.Itoa(contract.KioskProxyPort),
			// Loopback goes through the proxy too: in the seal nothing
			// else listens there that the kiosk should reach.
			"ProxyBypassList": "<-loopback>",
		},
	}
	if k.CAPEM != "" {
		cas, err := kioskCAs(k.CAPEM)
		if err != nil {
			return nil, err
		}
		pol["CACertificates"] = cas
	}
	return pol, nil
}

// prepareChromium writes the session's /etc/chromium stand-in in etc.
func prepareChromium(k *contract.KioskSpec, origin, etc string) error {
	// The bind needs its target, which Debian's chromium package makes;
	// say what is missing rather than fail in the seal's mounts.
	if fi, err := os.Stat("/etc/chromium"); err != nil || !fi.IsDir() {
		return errors.New("/etc/chromium is not a directory on this node: is chromium installed?")
	}
	pol, err := kioskPolicy(k, origin)
	if err != nil {
		return err
	}
	// Readable by the owner in root mode: the directory's own modes are
	// what count through the bind mount, not its parents'.
	managed := filepath.Join(etc, "policies", "managed")
	if err := os.MkdirAll(managed, 0o755); err != nil {
		return err
	}
	for _, d := range []string{etc, filepath.Join(etc, "policies"), managed} {
		os.Chmod(d, 0o755)
	}
	// The package's own initial preferences, if any, so first-run
	// behaves as the node's Chromium does.
	if b, err := os.ReadFile("/etc/chromium/master_preferences"); err == nil {
		if err := os.WriteFile(filepath.Join(etc, "master_preferences"), b, 0o644); err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(pol, "", "  ")
	if err := os.WriteFile(filepath.Join(managed, kioskPolicyFile), b, 0o644); err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	return nil
}

// kioskSetup is what the runner made for a kiosk outside the seal.
type kioskSetup struct {
	binds []seal.Bind // the browser's policy directories
	proxy *egressproxy.Proxy
	audit *egressAudit
}

// prepareKiosk writes the session's browser configuration in its scratch
// directory and makes its egress proxy.
func (r *run) prepareKiosk(st *setup) error {
	k := r.spec.Kiosk
	origin, target, err := kioskSite(k.URL)
	if err != nil {
		return fmt.Errorf("kiosk: %w", err)
	}
	var binds []seal.Bind
	switch k.Browser {
	case "firefox":
		if binds, err = prepareFirefox(k, filepath.Join(st.scratch, "kiosk-firefox")); err != nil {
			return fmt.Errorf("kiosk: %w", err)
		}
	default:
		etc := filepath.Join(st.scratch, "kiosk-etc-chromium")
		if err := prepareChromium(k, origin, etc); err != nil {
			return fmt.Errorf("kiosk: %w", err)
		}
		binds = []seal.Bind{{Source: etc, Target: "/etc/chromium"}}
	}
	audit := newEgressAudit(r, time.Now)
	proxy, err := egressproxy.New(egressproxy.Config{
		Allow:  append([]string{target}, k.Allow...),
		Logger: r.log,
		Audit:  audit.report,
	})
	if err != nil {
		return fmt.Errorf("kiosk: %w", err)
	}
	if r.cfg.Register != nil {
		go audit.run()
	}
	st.kiosk = &kioskSetup{binds: binds, proxy: proxy, audit: audit}
	return nil
}

// egressAuditRate is how many egress decisions a minute a session
// reports one by one; past it they are counted and reported as one
// "suppressed" event, so that a workload dialling the proxy in a loop
// cannot flood the gateway's audit log.
const egressAuditRate = 120

// egressFlushEvery is how often a runner that registers with the gateway
// (a batch job's) sends the decisions it has gathered.
const egressFlushEvery = 5 * time.Second

// egressAudit turns the proxy's decisions into egress events on stdout,
// at most egressAuditRate a minute, and, for a runner that registers with
// the gateway, into batched egress registrations too.
type egressAudit struct {
	r   *run
	now func() time.Time

	mu         sync.Mutex
	window     time.Time
	n, dropped int
	batch      []registration.Egress
	stop       chan struct{}
	stopped    chan struct{}
	finishOnce sync.Once
}

func newEgressAudit(r *run, now func() time.Time) *egressAudit {
	return &egressAudit{r: r, now: now, window: now(), stop: make(chan struct{}), stopped: make(chan struct{})}
}

func (a *egressAudit) report(d egressproxy.Decision) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.Sub(a.window) >= time.Minute {
		a.summary()
		a.window, a.n = now, 0
	}
	a.n++
	if a.n > egressAuditRate {
		a.dropped++
		return
	}
	a.send(Event{Kind: contract.EventEgress, ID: a.r.spec.ID, Target: d.Target, Verdict: d.Verdict, Reason: d.Reason})
}

// summary reports what went uncounted; under mu.
func (a *egressAudit) summary() {
	if a.dropped > 0 {
		a.send(Event{Kind: contract.EventEgress, ID: a.r.spec.ID, Verdict: "suppressed",
			Reason: fmt.Sprintf("%d egress decisions not reported one by one (over %d a minute)", a.dropped, egressAuditRate)})
		a.dropped = 0
	}
}

// send emits e and queues it for the gateway; under mu.
func (a *egressAudit) send(e Event) {
	a.r.emit(e)
	if a.r.cfg.Register != nil && len(a.batch) < registration.MaxEgress {
		a.batch = append(a.batch, registration.Egress{Target: e.Target, Verdict: e.Verdict, Reason: e.Reason})
	}
}

// run sends the gathered decisions to the gateway every egressFlushEvery
// until finish.
func (a *egressAudit) run() {
	defer close(a.stopped)
	t := time.NewTicker(egressFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush()
		case <-a.stop:
			return
		}
	}
}

func (a *egressAudit) flush() {
	a.mu.Lock()
	batch := a.batch
	a.batch = nil
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := a.r.cfg.Register.Send(ctx, registration.Registration{Event: contract.EventEgress, Egress: batch})
	if err != nil {
		// They are in the job's output still (stdout).
		a.r.log.Warn("could not send egress decisions to the gateway", "decisions", len(batch), "error", err)
	}
}

// finish reports what is left, before the session's exit is: the gateway
// takes egress registrations only while the session runs.
func (a *egressAudit) finish() {
	a.finishOnce.Do(func() {
		a.mu.Lock()
		a.summary()
		a.mu.Unlock()
		if a.r.cfg.Register == nil {
			return
		}
		close(a.stop)
		<-a.stopped
		a.flush()
	})
}

// kioskSeal adds the kiosk to the seal's configuration: the policy bind,
// the proxy's egress port and the browser.
func (r *run) kioskSeal(ctx context.Context, scfg *seal.Config, ks *kioskSetup, env []string) {
	k := r.spec.Kiosk
	scfg.Binds = append(scfg.Binds, ks.binds...)
	if scfg.EgressLocal == nil {
		scfg.EgressLocal = map[int]func(context.Context) (net.Conn, error){}
	}
	scfg.EgressLocal[contract.KioskProxyPort] = func(context.Context) (net.Conn, error) {
		// The tunnel lives as long as the session, not the dial.
		return ks.proxy.Pipe(ctx)
	}
	env = slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "HOME=") })
	env = append(env, "HOME="+kioskProfileDir+"/home", "DISPLAY="+cmp.Or(k.Display, ":1"))
	wm := []string{"kiosk-wm", "--display", cmp.Or(k.Display, ":1")}
	var browser []string
	if k.Browser == "firefox" {
		wm = append(wm, "--mkdir", kioskProfileDir+"/profile", "--mkdir", kioskProfileDir+"/home")
		// Firefox's own crash reporter would offer to send a report (a
		// window, and a way out if the proxy allowed it).
		env = append(env, "MOZ_CRASHREPORTER_DISABLE=1")
		browser = firefoxArgv(k.URL)
	} else {
		browser = chromiumArgv(k)
	}
	// The airlock binary's kiosk window manager starts the browser and
	// ends with it (internal/kioskwm).
	scfg.Processes = append(scfg.Processes, seal.Process{
		Name: "kiosk-browser", Role: seal.Helper, Essential: true, Env: env, Dir: "/", Listener: -1, Self: true,
		Argv: append(append(wm, "--"), browser...),
	})
}

// chromiumArgv starts Chromium on the kiosk's URL.
func chromiumArgv(k *contract.KioskSpec) []string {
	proxy := "127.0.0.1:" + strconv.Itoa(contract.KioskProxyPort)
	var window []string
	if w, h, ok := strings.Cut(k.Geometry, "x"); ok {
		window = []string{"--window-position=0,0", "--window-size=" + w + "," + h}
	}
	return append([]string{"chromium",
		"--kiosk", "--app=" + k.URL,
		"--user-data-dir=" + kioskProfileDir + "/profile",
		"--no-first-run", "--no-default-browser-check", "--noerrdialogs",
		"--disable-session-crashed-bubble", "--disable-background-networking",
		"--password-store=basic",
		// The policy fixes the proxy too; the flags make the first
		// request use it before the policy is loaded.
		"--proxy-server=" + proxy, "--proxy-bypass-list=<-loopback>",
	}, window...)
}
