package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestTerms: a launch before the profile's terms are accepted is refused
// with a pointer to them; accepting needs the hash of the text shown and
// is audited with it; a changed text asks again.
func TestTerms(t *testing.T) {
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	withTerms := func(text string) func(*Config) {
		return func(c *Config) { c.Portal = pt; c.Profiles[0].Terms = text }
	}
	tg := startGateway(t, "", withTerms("Use it for research only. (v1)"), "alice")
	alice := tg.client().loginToken("alice")
	launch := func(c *client) (int, string) {
		// Past the terms, the CPU limit refuses: no session needs to start.
		return c.do("POST", "/api/v1/sessions", map[string]any{"profile": "app", "cpus": 99}, nil)
	}
	if st, body := launch(alice); st != 409 || !strings.Contains(body, "terms_not_accepted") || !strings.Contains(body, "/terms/app") {
		t.Fatalf("launch before accepting: %d %s; want 409 pointing at /terms/app", st, body)
	}
	var terms struct {
		Text, Hash string
		Accepted   bool
	}
	if st, body := alice.do("GET", "/api/v1/profiles/app/terms", nil, &terms); st != 200 || terms.Accepted || !strings.Contains(terms.Text, "(v1)") {
		t.Fatalf("terms: %d %s", st, body)
	}
	// Accepting a text other than the one there now is refused.
	if st, body := alice.do("POST", "/api/v1/profiles/app/terms", map[string]string{"hash": strings.Repeat("0", 64)}, nil); st != 409 {
		t.Fatalf("accept another text: %d %s; want 409", st, body)
	}
	if st, body := alice.do("POST", "/api/v1/profiles/app/terms", map[string]string{"hash": terms.Hash}, nil); st != 204 {
		t.Fatalf("accept: %d %s", st, body)
	}
	if st, body := launch(alice); st == 409 || st < 400 {
		t.Fatalf("launch after accepting: %d %s; want the CPU limit's refusal", st, body)
	}
	evs, err := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Actor: "alice", Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Action == "terms_accept" && e.Detail == "app sha256:"+terms.Hash
	}
	if !found {
		t.Fatalf("no terms_accept audit event with the hash in %+v", evs)
	}

	// A new text: asked again, in the API and the portal.
	stateDir := tg.stateDir
	tg.stop()
	tg = startGateway(t, stateDir, withTerms("Use it for research only. No mining. (v2)"), "alice")
	alice = tg.client().loginToken("alice")
	if st, body := launch(alice); st != 409 || !strings.Contains(body, "changed") {
		t.Fatalf("launch after the text changed: %d %s; want 409, changed", st, body)
	}
	browser := tg.client().loginCookie("alice")
	resp, page := browser.get(tg.url + "/terms/app")
	if resp.StatusCode != 200 || !strings.Contains(page, "No mining. (v2)") || !strings.Contains(page, "changed since you last accepted") {
		t.Fatalf("terms page: %d", resp.StatusCode)
	}
	var v2 struct{ Hash string }
	alice.do("GET", "/api/v1/profiles/app/terms", nil, &v2)
	req, _ := http.NewRequest("POST", tg.url+"/terms/app", strings.NewReader(url.Values{"hash": {v2.Hash}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, body := browser.send(req); resp.StatusCode != 303 {
		t.Fatalf("accept in the portal: %d %s", resp.StatusCode, body)
	}
	if st, body := launch(alice); st == 409 || st < 400 {
		t.Fatalf("launch after accepting v2: %d %s", st, body)
	}
	// A cross-site form cannot accept for the user.
	req, _ = http.NewRequest("POST", tg.url+"/terms/app", strings.NewReader(url.Values{"hash": {v2.Hash}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := browser.send(req); resp.StatusCode != 403 {
		t.Fatalf("cross-site acceptance: %d; want 403", resp.StatusCode)
	}
}

// TestTermsOtherUsers attacks the terms as other portal users: an
// acceptance is the accepting user's only (bob still may not launch after
// alice accepted), and a profile outside a user's groups has no terms for
// them: neither readable nor acceptable (with the right hash) in the API
// or the portal.
func TestTermsOtherUsers(t *testing.T) {
	const appTerms, desktopTerms = "App terms. (v1)", "Desktop terms, hpc only. (v1)"
	tg, _ := oidcGateway(t, nil, func(c *Config) {
		c.Profiles[0].Terms = appTerms     // app: everyone
		c.Profiles[1].Terms = desktopTerms // desktop: group hpc
	})
	login := func(name string) *client {
		c := tg.client()
		if resp, _ := c.get(oidcCallback(t, c, name).String()); resp.StatusCode != 303 {
			t.Fatalf("%s's login: %d", name, resp.StatusCode)
		}
		return c
	}
	alice, bob := login("alice"), login("bob") // hpc; other
	launch := func(c *client, profile string) (int, string) {
		// Past the terms and groups, the CPU limit refuses: no session
		// needs to start.
		return c.do("POST", "/api/v1/sessions", map[string]any{"profile": profile, "cpus": 99}, nil)
	}

	// Alice accepts the app's terms: her launch passes them, bob's not.
	if st, body := alice.do("POST", "/api/v1/profiles/app/terms", map[string]string{"hash": termsHash(appTerms)}, nil); st != 204 {
		t.Fatalf("alice accepts: %d %s", st, body)
	}
	if st, body := launch(alice, "app"); st == 409 || st < 400 {
		t.Fatalf("alice's launch after accepting: %d %s; want the CPU limit's refusal", st, body)
	}
	if st, body := launch(bob, "app"); st != 409 || !strings.Contains(body, "terms_not_accepted") {
		t.Fatalf("bob's launch after alice accepted: %d %s; want 409 terms_not_accepted", st, body)
	}
	var terms struct{ Accepted bool }
	if st, body := bob.do("GET", "/api/v1/profiles/app/terms", nil, &terms); st != 200 || terms.Accepted {
		t.Fatalf("bob's view of the app's terms: %d %s; want not accepted", st, body)
	}

	// The desktop is not bob's: its terms are not there for him, even
	// with the hash of the text.
	if st, body := bob.do("GET", "/api/v1/profiles/desktop/terms", nil, nil); st != 404 || strings.Contains(body, "hpc only") {
		t.Fatalf("bob reads the desktop's terms: %d %s; want 404 without the text", st, body)
	}
	if st, body := bob.do("POST", "/api/v1/profiles/desktop/terms", map[string]string{"hash": termsHash(desktopTerms)}, nil); st != 404 {
		t.Fatalf("bob accepts the desktop's terms: %d %s; want 404", st, body)
	}
	if resp, page := bob.get(tg.url + "/terms/desktop"); resp.StatusCode != 404 || strings.Contains(page, "hpc only") {
		t.Fatalf("bob's terms page for the desktop: %d; want 404 without the text", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", tg.url+"/terms/desktop", strings.NewReader(url.Values{"hash": {termsHash(desktopTerms)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, body := bob.send(req); resp.StatusCode != 404 {
		t.Fatalf("bob accepts the desktop's terms in the portal: %d %s; want 404", resp.StatusCode, body)
	}
	if st, body := launch(bob, "desktop"); st != 403 || !strings.Contains(body, "profile_forbidden") {
		t.Fatalf("bob launches the desktop: %d %s; want 403 profile_forbidden", st, body)
	}
	// Control: the desktop's terms are there for alice, who is in hpc.
	if st, body := alice.do("GET", "/api/v1/profiles/desktop/terms", nil, nil); st != 200 || !strings.Contains(body, "hpc only") {
		t.Fatalf("alice reads the desktop's terms: %d %s", st, body)
	}
	evs, err := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Actor: "bob", Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Action == "terms_accept" {
			t.Fatalf("bob's refused acceptances left an audit event: %+v", e)
		}
	}
}
