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
