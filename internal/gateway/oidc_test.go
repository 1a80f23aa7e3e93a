package gateway

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/realtest/oidcop"
	"github.com/airlock-hpc/airlock/internal/store"
)

const opPassword = "op-Passw0rd"

// oidcGateway starts a real OpenID provider on loopback (users alice: in
// hpc and airlock-admins; bob: in other) and a gateway that logs in
// through it, whose desktop profile is for group hpc only. rewrite, if
// not nil, may swap the ID token on its way from the provider (see
// oidcop.RewriteIDToken). more, if any, change the gateway's
// configuration further.
func oidcGateway(t *testing.T, rewrite *atomic.Pointer[func(string) string], more ...func(*Config)) (*testGateway, *oidcop.OP) {
	t.Helper()
	op := oidcop.Start(t,
		oidcop.User{ID: "sub-alice", Name: "alice", Password: opPassword, Email: "alice@example.org", Groups: []string{"hpc", "airlock-admins"}},
		oidcop.User{ID: "sub-bob", Name: "bob", Password: opPassword, Email: "bob@example.org", Groups: []string{"other"}})
	rt := &oidcop.RewriteIDToken{Rewrite: func(s string) string {
		if rewrite != nil {
			if f := rewrite.Load(); f != nil {
				return (*f)(s)
			}
		}
		return s
	}}
	p, err := oidc.New(oidc.Config{Name: "idp", Title: "Test IdP", Issuer: op.Issuer, ClientID: "airlock", ClientSecret: "client-s3cret",
		AdminGroups: []string{"airlock-admins"}, HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) {
		c.Portal = pt
		c.OIDC = []*oidc.Provider{p}
		c.Profiles[1].Groups = []string{"hpc"}
		for _, f := range more {
			f(c)
		}
	})
	op.AddClient("airlock", "client-s3cret", []string{tg.url + "/auth/oidc/idp/callback"}, []string{tg.url + "/login"})
	return tg, op
}

// oidcCallback logs name in at the provider, starting from the gateway,
// and returns the callback URL the provider sent the browser to.
func oidcCallback(t *testing.T, c *client, name string) *url.URL {
	t.Helper()
	cb := oidcop.LogIn(t, c.http, c.tg.url+"/auth/oidc/idp/login?next=/sessions", name, opPassword)
	if !strings.HasPrefix(cb.String(), c.tg.url+"/auth/oidc/idp/callback?") {
		t.Fatalf("provider sent the browser to %s", cb)
	}
	return cb
}

func hasLoginCookie(resp *http.Response) bool {
	for _, c := range resp.Cookies() {
		if c.Name == loginCookie && c.Value != "" {
			return true
		}
	}
	return false
}

type meOut struct {
	User   string
	Admin  bool
	Groups []string
}

// TestOIDCLogin logs in through a real provider and checks what the
// gateway makes of it: the user, admin by group, the profiles their
// groups allow; then the attacks on the callback: a replayed state, a
// callback finished in another browser (login CSRF), tokens the provider
// did not mean for airlock; and logging out at the provider too.
func TestOIDCLogin(t *testing.T) {
	var rewrite atomic.Pointer[func(string) string]
	tg, op := oidcGateway(t, &rewrite)

	alice := tg.client()
	cb := oidcCallback(t, alice, "alice")
	resp, _ := alice.get(cb.String())
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/sessions" || !hasLoginCookie(resp) {
		t.Fatalf("callback: %d to %q, login cookie %v; want 303 to /sessions with a login", resp.StatusCode, resp.Header.Get("Location"), hasLoginCookie(resp))
	}
	var me meOut
	if st, body := alice.do("GET", "/api/v1/me", nil, &me); st != 200 || me.User != "alice" || !me.Admin || !slices.Equal(me.Groups, []string{"airlock-admins", "hpc"}) {
		t.Fatalf("me: %d %s", st, body)
	}

	t.Run("replayed state", func(t *testing.T) {
		// The same callback again, from the browser that finished it and
		// from a fresh one: the state was used.
		for _, c := range []*client{alice, tg.client()} {
			resp, body := c.get(cb.String())
			if resp.StatusCode != 401 || hasLoginCookie(resp) || !strings.Contains(body, "login failed") {
				t.Fatalf("replayed callback: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
			}
		}
		// Refused by the gateway's own rule (the state is spent), not
		// only by the provider's (its code is spent too).
		evs, err := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Action != "login_failed" || !strings.Contains(e.Detail, "already used state") {
				t.Fatalf("audit after a replay: %+v; want login_failed for a used state", e)
			}
		}
	})

	t.Run("callback in another browser", func(t *testing.T) {
		// An attacker logs in as bob and has alice's browser open the
		// callback: the login would be bob's in alice's browser.
		attacker := tg.client()
		cb := oidcCallback(t, attacker, "bob")
		victim := tg.client()
		resp, _ := victim.get(cb.String())
		if resp.StatusCode != 401 || hasLoginCookie(resp) {
			t.Fatalf("callback in another browser: %d, login cookie %v; want 401, none", resp.StatusCode, hasLoginCookie(resp))
		}
		// And the state is spent: the attacker cannot use it either.
		if resp, _ := attacker.get(cb.String()); resp.StatusCode != 401 || hasLoginCookie(resp) {
			t.Fatalf("state after a refused callback: %d", resp.StatusCode)
		}
	})

	t.Run("tokens not for airlock", func(t *testing.T) {
		key, kid := op.Key(t)
		for name, mutate := range map[string]func(map[string]any){
			"wrong audience": func(c map[string]any) { c["aud"] = "someone-else" },
			"expired": func(c map[string]any) {
				c["exp"] = time.Now().Add(-time.Minute).Unix()
				c["iat"] = time.Now().Add(-time.Hour).Unix()
			},
			"forged": nil,
		} {
			f := func(raw string) string {
				claims := oidcop.Claims(t, raw)
				if mutate == nil {
					forger, _ := newForger()
					return oidcop.Sign(t, forger, kid, claims)
				}
				mutate(claims)
				return oidcop.Sign(t, key, kid, claims)
			}
			rewrite.Store(&f)
			c := tg.client()
			cb := oidcCallback(t, c, "alice")
			resp, body := c.get(cb.String())
			rewrite.Store(nil)
			if resp.StatusCode != 401 || hasLoginCookie(resp) || !strings.Contains(body, "login failed") {
				t.Fatalf("%s: %d, login cookie %v; want 401 login failed", name, resp.StatusCode, hasLoginCookie(resp))
			}
		}
	})

	t.Run("groups decide profiles", func(t *testing.T) {
		bob := tg.client()
		resp, _ := bob.get(oidcCallback(t, bob, "bob").String())
		if resp.StatusCode != 303 {
			t.Fatalf("bob's login: %d", resp.StatusCode)
		}
		var profiles struct{ Profiles []struct{ Name string } }
		bob.do("GET", "/api/v1/profiles", nil, &profiles)
		if len(profiles.Profiles) != 1 || profiles.Profiles[0].Name != "app" {
			t.Fatalf("bob's profiles: %+v; want app only", profiles)
		}
		if st, body := bob.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop"}, nil); st != 403 || !strings.Contains(body, "profile_forbidden") {
			t.Fatalf("bob launches desktop: %d %s; want 403 profile_forbidden", st, body)
		}
		if st, _ := bob.do("GET", "/admin", nil, nil); st != 403 {
			t.Fatalf("bob's admin page: %d; want 403", st)
		}
		if st, _ := bob.do("GET", "/api/v1/admin/sessions", nil, nil); st != 403 {
			t.Fatalf("bob's admin API: %d; want 403", st)
		}
		if st, _ := alice.do("GET", "/api/v1/admin/sessions", nil, nil); st != 200 {
			t.Fatalf("alice's admin API: %d; want 200", st)
		}
		// Alice passes the group check (and is stopped only by the CPU
		// limit she asks beyond, so no session needs to start).
		if st, body := alice.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop", "cpus": 99}, nil); st == 403 || st < 400 {
			t.Fatalf("alice launches desktop beyond its limit: %d %s; want a limit refusal, not 403", st, body)
		}
	})

	t.Run("groups re-evaluated at login", func(t *testing.T) {
		// The provider takes alice out of her groups; her next login says
		// so, and from then on every one of her logins (the old cookie
		// too) is neither admin nor allowed the desktop.
		op.SetGroups("sub-alice", []string{})
		again := tg.client()
		resp, _ := again.get(oidcCallback(t, again, "alice").String())
		if resp.StatusCode != 303 {
			t.Fatalf("alice's second login: %d", resp.StatusCode)
		}
		for _, c := range []*client{again, alice} {
			var me meOut
			c.do("GET", "/api/v1/me", nil, &me)
			if me.Admin || len(me.Groups) != 0 {
				t.Fatalf("after losing her groups: %+v", me)
			}
			if st, _ := c.do("POST", "/api/v1/sessions", map[string]any{"profile": "desktop"}, nil); st != 403 {
				t.Fatalf("after losing her groups, launch desktop: %d; want 403", st)
			}
		}
		op.SetGroups("sub-alice", []string{"hpc", "airlock-admins"})
	})

	t.Run("logout at the provider", func(t *testing.T) {
		req, _ := http.NewRequest("POST", tg.url+"/logout", nil)
		req.Header.Set("Origin", tg.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := alice.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := regexp.MustCompile(`href="([^"]+)"`).FindStringSubmatch(string(body))
		if m == nil {
			t.Fatalf("logout page: %d %s", resp.StatusCode, body)
		}
		loc, _ := url.Parse(html.UnescapeString(m[1]))
		if resp.StatusCode != 200 || !strings.HasPrefix(loc.String(), op.Issuer) || loc.Query().Get("id_token_hint") == "" ||
			loc.Query().Get("post_logout_redirect_uri") != tg.url+"/login" {
			t.Fatalf("logout: %d to %s; want the provider's end-session endpoint with id_token_hint", resp.StatusCode, loc)
		}
		// The provider accepts it and sends the browser back.
		resp2, _ := alice.get(loc.String())
		if back := resp2.Header.Get("Location"); resp2.StatusCode/100 != 3 || !strings.HasPrefix(back, tg.url+"/login") {
			t.Fatalf("provider's end session: %d to %q", resp2.StatusCode, back)
		}
		if st, _ := alice.do("GET", "/api/v1/me", nil, nil); st != 401 {
			t.Fatalf("after logout: %d; want 401", st)
		}
	})
}

// TestOIDCProviderDown: a provider that cannot be reached is "try again
// later" (503), not "login failed".
func TestOIDCProviderDown(t *testing.T) {
	p, err := oidc.New(oidc.Config{Name: "idp", Issuer: "http://127.0.0.1:1", ClientID: "airlock"})
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) { c.OIDC = []*oidc.Provider{p} })
	resp, body := tg.client().get(tg.url + "/auth/oidc/idp/login")
	if resp.StatusCode != 503 || !strings.Contains(body, "try again later") {
		t.Fatalf("login with the provider down: %d", resp.StatusCode)
	}
	if resp, _ := tg.client().get(tg.url + "/auth/oidc/nope/login"); resp.StatusCode != 404 {
		t.Fatalf("unknown provider: %d", resp.StatusCode)
	}
}

// TestOIDCBrowser logs in through the provider's own pages in headless
// Chromium: the button, the provider's form, back to the portal. Alice
// (groups hpc, airlock-admins) sees the desktop profile and the admin
// page; bob sees neither. Alice's logout ends at the login page.
func TestOIDCBrowser(t *testing.T) {
	needBrowser(t)
	tg, op := oidcGateway(t, nil)
	b := startBrowser(t, "oidc.mjs", map[string]string{"base": tg.url, "issuer": op.Issuer, "password": opPassword})
	a := b.wait("alice", 60*time.Second)
	if !strings.HasPrefix(a["url"].(string), tg.url+"/admin") || a["adminLink"] != true || a["adminStatus"] != 200.0 ||
		!slices.Contains(toStrings(a["profiles"]), "desktop") {
		t.Fatalf("alice: %v", a)
	}
	bo := b.wait("bob", 60*time.Second)
	if bo["adminLink"] != false || bo["adminStatus"] != 403.0 || slices.Contains(toStrings(bo["profiles"]), "desktop") ||
		!slices.Contains(toStrings(bo["profiles"]), "app") {
		t.Fatalf("bob: %v", bo)
	}
	if l := b.wait("logout", 30*time.Second); l["me"] != 401.0 {
		t.Fatalf("after logout: %v", l)
	}
	if d := b.wait("done", 30*time.Second); len(d["errors"].([]any)) != 0 {
		t.Fatalf("page errors: %v", d["errors"])
	}
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

func newForger() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

// TestOIDCPendingBounded: logins under way are bounded, so requests
// without a login cannot fill memory; expired ones go first.
func TestOIDCPendingBounded(t *testing.T) {
	var s oidcState
	now := time.Now()
	s.put("old", oidcPending{expires: now.Add(-time.Second)}, now)
	for i := range oidcMaxPending + 10 {
		s.put(fmt.Sprint(i), oidcPending{expires: now.Add(time.Duration(i) * time.Millisecond)}, now)
	}
	if len(s.pending) > oidcMaxPending {
		t.Fatalf("%d logins under way kept; at most %d", len(s.pending), oidcMaxPending)
	}
	if _, ok := s.take("old"); ok {
		t.Fatal("an expired login was kept over live ones")
	}
	if _, ok := s.take(fmt.Sprint(oidcMaxPending + 9)); !ok {
		t.Fatal("the newest login was dropped")
	}
	if _, ok := s.take(fmt.Sprint(oidcMaxPending + 9)); ok {
		t.Fatal("a state was taken twice")
	}
}
