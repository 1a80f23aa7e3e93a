package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// hostilePage is the app's page: with the viewer's browser it tries the
// gateway's API (read who they are, mint a token) and the cookies, and
// keeps what it got in window.attack; its form posts to the API.
const hostilePage = `<!doctype html><html><head><title>hostile app</title></head><body><h1>hostile app</h1>
<form id="f" method="post" action="GW/api/v1/tokens" enctype="text/plain"><input name='{"name":"form","x":"' value='"}'></form>
<script>
(async () => {
  const gw = 'GW';
  const r = {origin: self.origin}; // the document's origin: "null" when sandboxed
  try { const x = await fetch(gw + '/api/v1/me', {credentials: 'include'}); r.me = x.status + ' ' + await x.text(); } catch (e) { r.me = 'blocked: ' + e; }
  try {
    const x = await fetch(gw + '/api/v1/tokens', {method: 'POST', credentials: 'include', headers: {'Content-Type': 'application/json'}, body: '{"name":"stolen"}'});
    r.token = x.status + ' ' + await x.text();
  } catch (e) { r.token = 'blocked: ' + e; }
  try { await fetch(gw + '/api/v1/tokens', {method: 'POST', mode: 'no-cors', credentials: 'include', body: '{"name":"stolen-no-cors"}'}); r.nocors = 'sent'; } catch (e) { r.nocors = 'blocked: ' + e; }
  try { r.cookie = document.cookie; } catch (e) { r.cookie = 'blocked: ' + e; }
  window.attack = r;
})();
</script></body></html>
`

// TestHostileAppPage: in real Chromium, Alice's web app (python3's
// http.server in a real session) serves a hostile page; Bob opens it
// through a view-only share from the portal. The page runs on the app's
// own origin: it cannot read who Bob is, mint a token for him, see a
// gateway cookie, or post a form to the API as him. Bob's tokens are
// checked in the store afterwards.
func TestHostileAppPage(t *testing.T) {
	t.Run("own origin", func(t *testing.T) { testHostileAppPage(t, false) })
	// The admin's opt-in: on the gateway's origin, sandboxed by CSP.
	t.Run("same origin sandboxed", func(t *testing.T) { testHostileAppPage(t, true) })
}

func testHostileAppPage(t *testing.T, sameOrigin bool) {
	needBrowser(t)
	owner := realtest.Current(t)
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t)
	}
	dir := ownerDir(t, owner, "airlock-hostile-")
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = p
		c.Apps.SameOrigin = sameOrigin
		c.Profiles = append(c.Profiles, Profile{Name: "web", Title: "Web app", Kind: "app", Port: 8000, StripPrefix: true,
			Command: []string{"/usr/bin/python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", dir},
			CPUs:    1, MaxCPUs: 1, MemoryMB: 256, MaxMemoryMB: 512, Lifetime: time.Hour, MaxLifetime: time.Hour})
	}, "alice", "bob")
	index := filepath.Join(dir, "index.html")
	if err := os.WriteFile(index, []byte(strings.ReplaceAll(hostilePage, "GW", tg.url)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(index, owner.UID, owner.GID)

	alice := tg.client().loginToken("alice")
	s := alice.launch("web")
	if err := realtest.WaitFor(30*time.Second, func() error {
		if code, body := alice.do("GET", "/s/"+s.ID+"/app/", nil, nil); code != 200 || !strings.Contains(body, "hostile app") {
			return fmt.Errorf("app: %d %.80s", code, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var share struct{ URL string }
	if code, body := alice.do("POST", "/api/v1/sessions/"+s.ID+"/shares", map[string]string{"mode": "view"}, &share); code != 201 {
		t.Fatalf("share: %d %s", code, body)
	}
	bobTokens := func() int {
		ts, err := tg.cfg.Store.ListTokens(t.Context(), "bob")
		if err != nil {
			t.Fatal(err)
		}
		return len(ts)
	}
	before := bobTokens()

	b := startBrowser(t, "hostile-app.mjs", map[string]string{"base": tg.url, "password": testPassword, "viewer": "bob", "shareURL": share.URL})
	m := b.wait("attacked", 120*time.Second)
	attack, _ := m["attack"].(map[string]any)
	got, _ := json.Marshal(attack)
	t.Logf("the page got: %s", got)
	// The control: the page's script ran to its end (every attempt made),
	// or the checks below would pass on nothing.
	if nocors, _ := attack["nocors"].(string); nocors == "" || attack["me"] == nil || attack["token"] == nil {
		t.Fatalf("the app's page did not run its attack: %s", got)
	}
	origin, _ := attack["origin"].(string)
	switch {
	case sameOrigin && origin != "null":
		t.Errorf("the sandboxed app's page ran on origin %q, want the opaque origin \"null\"", origin)
	case !sameOrigin && !strings.HasPrefix(origin, "https://"+s.ID+".apps.localhost:"):
		t.Errorf("the app's page ran on origin %q, want its own host", origin)
	}
	if me, _ := attack["me"].(string); strings.Contains(me, `"bob"`) {
		t.Errorf("the app's page read the viewer's identity: %s", me)
	}
	if tok, _ := attack["token"].(string); strings.HasPrefix(tok, "201") || strings.Contains(tok, "alk_") {
		t.Errorf("the app's page minted a token: %s", tok)
	}
	if c, _ := attack["cookie"].(string); strings.Contains(c, "airlock") {
		t.Errorf("the app's page read airlock's cookies: %q", c)
	}
	f := b.wait("form", 60*time.Second)
	t.Logf("after the form: %v", f)
	if body, _ := f["body"].(string); body == "" || strings.Contains(body, "alk_") {
		t.Errorf("the form minted a token, or got no answer: %q", body)
	}
	if n := bobTokens(); n != before {
		t.Errorf("bob has %d tokens after the app's page ran, had %d", n, before)
	}
}
