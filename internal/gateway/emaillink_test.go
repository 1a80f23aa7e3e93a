package gateway

import (
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/mailer"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest/smtpsink"
)

// emailPublicURL is the public address of emailGateway's gateway, which
// its links name; tests open them at the gateway's real address.
const emailPublicURL = "https://gw.test"

// emailGateway is a gateway that sends login links for example.org
// through a real SMTP sink on loopback, with a clock the test moves. more,
// if any, change its configuration further.
func emailGateway(t *testing.T, more ...func(*Config)) (*testGateway, *smtpsink.Sink, *atomic.Int64) {
	t.Helper()
	sink := smtpsink.Start(t)
	m, err := mailer.New(mailer.Config{URL: sink.URL, RootCAs: sink.CAFile, From: "airlock <airlock@gw.test>"})
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	tg := startGateway(t, "", func(c *Config) {
		c.Mailer, c.PublicURL = m, emailPublicURL
		c.EmailLogin = &EmailLogin{Domains: []string{"example.org"}, TTL: 5 * time.Minute, AdminUsers: []string{"dave"}}
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		for _, f := range more {
			f(c)
		}
	})
	return tg, sink, &skew
}

// askLink asks for a login link for addr from c.
func askLink(t *testing.T, c *client, addr string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.tg.url+"/login/email", strings.NewReader(url.Values{"email": {addr}, "next": {"/sessions"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, body := c.send(req)
	return resp.StatusCode, body
}

var linkRE = regexp.MustCompile(`https://[^\s]+/login/email/[A-Za-z0-9_-]{43}`)

// linkFor waits for the next message at the sink, checks it is for to,
// and returns the link in it, at tg's real address.
func linkFor(t *testing.T, tg *testGateway, sink *smtpsink.Sink, to string) string {
	t.Helper()
	m := sink.Next(t, 10*time.Second)
	if len(m.To) != 1 || m.To[0] != to {
		t.Fatalf("message to %v, want %s:\n%s", m.To, to, m.Data)
	}
	l := linkRE.FindString(m.Data)
	path, ok := strings.CutPrefix(l, emailPublicURL)
	if !ok {
		t.Fatalf("no login link at %s in:\n%s", emailPublicURL, m.Data)
	}
	return tg.url + path
}

// TestEmailLink: a link arrives at the SMTP sink, logs in once, only the
// browser that asked, and not after it expires; an address outside the
// allowed domains gets the same answer and no mail; a hostile page cannot
// make a browser ask.
func TestEmailLink(t *testing.T) {
	tg, sink, skew := emailGateway(t)
	a := tg.client()
	st, known := askLink(t, a, "Carol@Example.org")
	if st != 202 {
		t.Fatalf("ask: %d %s", st, known)
	}
	link := linkFor(t, tg, sink, "carol@example.org")

	// Another browser (a forwarded mail, a mail scanner): refused, and the
	// link stays for the browser that asked.
	b := tg.client()
	if resp, _ := b.get(link); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("link in another browser: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
	}
	resp, _ := a.get(link)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/sessions" || !hasLoginCookie(resp) {
		t.Fatalf("link in the browser that asked: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var me meOut
	if st, body := a.do("GET", "/api/v1/me", nil, &me); st != 200 || me.User != "carol" || me.Admin {
		t.Fatalf("me: %d %s", st, body)
	}
	// Used: never again, not even in the browser that asked.
	if resp, _ := a.get(link); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("link used twice: %d", resp.StatusCode)
	}

	t.Run("expired", func(t *testing.T) {
		c := tg.client()
		askLink(t, c, "dave@example.org")
		link := linkFor(t, tg, sink, "dave@example.org")
		skew.Store(int64(5*time.Minute + time.Second))
		defer skew.Store(0)
		if resp, _ := c.get(link); resp.StatusCode != 401 || hasLoginCookie(resp) {
			t.Fatalf("expired link: %d", resp.StatusCode)
		}
	})

	t.Run("address not allowed", func(t *testing.T) {
		c := tg.client()
		st, body := askLink(t, c, "mallory@evil.org")
		if st != 202 || body != known {
			t.Fatalf("unknown domain: %d %q; want the answer a known address gets, %q", st, body, known)
		}
		// The next message at the sink is for the next allowed address:
		// none went to mallory (mails leave in order).
		askLink(t, c, "erin@example.org")
		linkFor(t, tg, sink, "erin@example.org")
	})

	t.Run("cross-site ask", func(t *testing.T) {
		// A hostile page makes the victim's browser ask for a link to the
		// attacker's address: the victim's browser would hold the binding,
		// and the attacker's link, sent on to the victim, would log them
		// in as the attacker (login CSRF). Refused, and nothing is mailed.
		c := tg.client()
		req, _ := http.NewRequest("POST", tg.url+"/login/email", strings.NewReader(url.Values{"email": {"mallory@example.org"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if resp, _ := c.send(req); resp.StatusCode != 403 {
			t.Fatalf("cross-site ask: %d; want 403", resp.StatusCode)
		}
		// The next message is for the next same-site ask: none went to
		// mallory (mails leave in order).
		askLink(t, c, "grace@example.org")
		linkFor(t, tg, sink, "grace@example.org")
	})

}

// TestEmailLinkRateLimits: asking is limited per address (3 in the
// window) and per client (10), on a gateway of its own so that each
// refusal is the limit it claims: an unknown address costs what a known
// one does (the limit tells nothing), and a client that spreads its asks
// over fresh addresses meets its own limit.
func TestEmailLinkRateLimits(t *testing.T) {
	tg, sink, _ := emailGateway(t)
	c := tg.client()
	for i := range 3 {
		if st, _ := askLink(t, c, "frank@example.org"); st != 202 {
			t.Fatalf("ask %d: %d", i, st)
		}
		linkFor(t, tg, sink, "frank@example.org")
	}
	if st, _ := askLink(t, c, "frank@example.org"); st != 429 {
		t.Fatalf("fourth ask for one address: %d; want 429", st)
	}
	for i := range 3 {
		if st, _ := askLink(t, c, "x@evil.org"); st != 202 {
			t.Fatalf("ask %d for an unknown address: %d", i, st)
		}
	}
	if st, _ := askLink(t, c, "x@evil.org"); st != 429 {
		t.Fatalf("fourth ask for an unknown address: %d; want 429", st)
	}
	// 6 asks counted so far (refused ones are not): four fresh addresses
	// more reach the client's 10, and a fifth is refused though its
	// address is new.
	for _, a := range []string{"y1@evil.org", "y2@evil.org", "y3@example.org", "y4@evil.org"} {
		if st, _ := askLink(t, c, a); st != 202 {
			t.Fatalf("ask for %s: %d", a, st)
		}
	}
	if st, _ := askLink(t, c, "y5@evil.org"); st != 429 {
		t.Fatalf("eleventh ask from one client, for a fresh address: %d; want 429", st)
	}
}

// TestEmailLinkFormAfterFailure: every login page a failure shows (a bad
// link, which tells the user to ask for a new one; a wrong password) still
// offers the form to ask for a link, as the plain login page does.
func TestEmailLinkFormAfterFailure(t *testing.T) {
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg, _, _ := emailGateway(t, func(c *Config) { c.Portal = pt })
	const form = `id="email-login"`
	c := tg.client()
	if resp, page := c.get(tg.url + "/login"); resp.StatusCode != 200 || !strings.Contains(page, form) {
		t.Fatalf("login page: %d, e-mail form %v", resp.StatusCode, strings.Contains(page, form))
	}
	if resp, page := c.get(tg.url + "/login/email/" + strings.Repeat("A", 43)); resp.StatusCode != 401 ||
		!strings.Contains(page, "ask for a new one") || !strings.Contains(page, form) {
		t.Fatalf("page after a bad link: %d, e-mail form %v:\n%s", resp.StatusCode, strings.Contains(page, form), page)
	}
	req, _ := http.NewRequest("POST", tg.url+"/login", strings.NewReader(url.Values{"user": {"alice"}, "password": {"wrong"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, page := c.send(req); resp.StatusCode != 401 || !strings.Contains(page, form) {
		t.Fatalf("page after a wrong password: %d, e-mail form %v", resp.StatusCode, strings.Contains(page, form))
	}
}

// TestEmailLinkForgedHost: an attacker asks for a victim's link with a
// forged Host header. Were the mailed link built from it, the victim's
// click would hand the secret to the attacker's host, and the attacker,
// whose browser asked and so holds the binding, would log in as the
// victim. The link must point at the gateway's public address only.
func TestEmailLinkForgedHost(t *testing.T) {
	tg, sink, _ := emailGateway(t)
	attacker := tg.client()
	req, _ := http.NewRequest("POST", tg.url+"/login/email", strings.NewReader(url.Values{"email": {"carol@example.org"}}.Encode()))
	req.Host = "evil.example"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, body := attacker.send(req)
	if resp.StatusCode != 202 {
		t.Fatalf("ask with a forged Host: %d %s", resp.StatusCode, body)
	}
	var bind *http.Cookie // the binding, which the attacker's client keeps whatever host it was set for
	for _, c := range resp.Cookies() {
		if c.Name == emailCookie {
			bind = c
		}
	}
	if bind == nil {
		t.Fatal("no binding cookie set")
	}
	m := sink.Next(t, 10*time.Second)
	u, err := url.Parse(linkRE.FindString(m.Data))
	if err != nil || u.Path == "" {
		t.Fatalf("no link in %q (%v)", m.Data, err)
	}
	if "https://"+u.Host != emailPublicURL {
		// What the victim's click would give the attacker:
		req, _ := http.NewRequest("GET", tg.url+u.Path, nil)
		req.AddCookie(&http.Cookie{Name: bind.Name, Value: bind.Value})
		resp, _ := tg.client().send(req)
		t.Fatalf("the mailed link points at %s (the attacker's Host); with its secret the attacker logs in: %d, login cookie %v",
			u.Host, resp.StatusCode, hasLoginCookie(resp))
	}
	// Without a public address there is nothing safe to name: refused.
	cfg := testConfig(t, t.TempDir(), time.Second, slog.LevelWarn)
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.Mailer, cfg.EmailLogin = tg.cfg.Mailer, &EmailLogin{Domains: []string{"example.org"}}
	if g, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "PublicURL") {
		if g != nil {
			g.Close()
		}
		t.Fatalf("a gateway with e-mail login and no PublicURL: %v; want refused", err)
	}
}
