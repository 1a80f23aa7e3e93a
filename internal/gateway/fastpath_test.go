package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// appGet sends a GET to the session's app on the gateway's origin with
// bearer token tok (the script path), and returns the status and the
// echo app's answer.
func appGet(c *client, id, tok string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.tg.url+"/s/"+id+"/app/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body := c.send(req)
	return resp.StatusCode, body
}

// warm makes the fast path hold everything a request of c needs: the
// token and user, the session, the share link, the connector's cookie.
func warm(t *testing.T, c *client, id, tok string) {
	t.Helper()
	for i := range 3 {
		if code, body := appGet(c, id, tok); code != 200 {
			t.Fatalf("request %d before the revocation: %d %s", i, code, body)
		}
	}
}

// TestFastPathRevocation (issue 18): with the fast path warm (token, user,
// session and share records kept, the connector's cookie in use, the
// client's keep-alive connection open), each revocation made through the
// gateway refuses the very next request on the same connection: token
// revoked, share link revoked, session stopped (its connector still up:
// the backend's stop is held). Without the caches being emptied on the
// revocation (revoke, notifyStore) each of these got 200 from the app.
func TestFastPathRevocation(t *testing.T) {
	var held *heldStop
	tg := startGateway(t, "", func(c *Config) {
		held = &heldStop{Backend: c.Backend, release: make(chan struct{})}
		c.Backend = held
		c.RecheckEvery = time.Hour // only the revocation itself may refuse
	}, "alice", "bob")
	alice := tg.client().loginToken("alice")
	s := alice.launch("app")

	t.Run("token revoked", func(t *testing.T) {
		var made struct{ Token, ID string }
		if code, body := alice.do("POST", "/api/v1/tokens", map[string]any{"name": "script"}, &made); code != 201 {
			t.Fatalf("token: %d %s", code, body)
		}
		script := tg.client()
		warm(t, script, s.ID, made.Token)
		if code, body := alice.do("DELETE", "/api/v1/tokens/"+made.ID, nil, nil); code != 204 {
			t.Fatalf("revoke token: %d %s", code, body)
		}
		if code, body := appGet(script, s.ID, made.Token); code != 401 {
			t.Fatalf("next request with the revoked token: %d %s, want 401", code, body)
		}
	})

	t.Run("share revoked", func(t *testing.T) {
		bob := tg.client().loginCookie("bob")
		bobTok := tg.client().loginToken("bob").token
		shID := shareLink(t, alice, bob, s.ID, "control", "1h")
		warm(t, bob, s.ID, bobTok)
		if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID+"/shares/"+shID, nil, nil); code != 204 {
			t.Fatalf("revoke share: %d %s", code, body)
		}
		if code, body := appGet(bob, s.ID, bobTok); code != 403 {
			t.Fatalf("next request by the revoked share: %d %s, want 403", code, body)
		}
	})

	t.Run("session stopped", func(t *testing.T) {
		warm(t, alice, s.ID, alice.token)
		// The stop returns once the backend's (held) stop does: the
		// request below goes once the gateway has announced the stop.
		announced := make(chan struct{}, 1)
		tg.g.onRevoke(func(ev revokeEvent) {
			if ev.Session == s.ID {
				select {
				case announced <- struct{}{}:
				default:
				}
			}
		})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			req, _ := http.NewRequest("DELETE", tg.url+"/api/v1/sessions/"+s.ID, nil)
			req.Header.Set("Authorization", "Bearer "+alice.token)
			if resp, err := alice.http.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		defer func() { close(held.release); <-stopped }()
		select {
		case <-announced:
		case <-time.After(10 * time.Second):
			t.Fatal("the stop was not announced")
		}
		if code, body := appGet(alice, s.ID, alice.token); code != 409 {
			t.Fatalf("next request to the stopping session: %d %s, want 409", code, body)
		}
	})
}

// TestFastPathHopCookie (issue 18): after one ticket, the gateway reaches
// the app connector with the connector's own cookie, kept per (session,
// connector, user, mode), which never leaves the gateway: not in an
// answer, not at the app. Another user never rides it: a view-only
// viewer's POST, right after the owner's requests made the owner's
// control cookie the one kept, is refused by the connector. And any
// revocation forgets every kept cookie.
func TestFastPathHopCookie(t *testing.T) {
	tg := startGateway(t, "", func(c *Config) { c.RecheckEvery = time.Hour }, "alice", "bob")
	alice := tg.client().loginToken("alice")
	s := alice.launch("app")
	// Bob's login, token and view-only share first: a login empties the
	// caches (ensureUser), so the owner's requests below are what fill them.
	bob := tg.client().loginCookie("bob")
	bobTok := tg.client().loginToken("bob").token
	shareLink(t, alice, bob, s.ID, "view", "1h")
	ownerKey := hopKey{s.ID, "app", "alice", session.Control}
	owner := func() {
		t.Helper()
		for range 3 {
			req, _ := http.NewRequest("GET", tg.url+"/s/"+s.ID+"/app/x", nil)
			req.Header.Set("Authorization", "Bearer "+alice.token)
			req.Header.Set("Cookie", "mine=1")
			resp, body := alice.send(req)
			if resp.StatusCode != 200 {
				t.Fatalf("owner: %d %s", resp.StatusCode, body)
			}
			for _, sc := range resp.Header.Values("Set-Cookie") {
				if strings.HasPrefix(sc, "airlock_") {
					t.Fatalf("the connector's cookie reached the client: %s", sc)
				}
			}
			var echo struct{ Cookie, Authorization string }
			if err := json.Unmarshal([]byte(body), &echo); err != nil {
				t.Fatalf("echo: %v %s", err, body)
			}
			if strings.Contains(echo.Cookie, "airlock_") || echo.Authorization != "" || echo.Cookie != "mine=1" {
				t.Fatalf("the app saw cookie %q authorization %q, want only the client's own cookie", echo.Cookie, echo.Authorization)
			}
		}
		if _, ok := tg.g.fast.hop(ownerKey, tg.g.now()); !ok {
			t.Fatal("no connector cookie kept for the owner after three requests")
		}
	}

	owner()
	for range 2 {
		if code, body := appGet(bob, s.ID, bobTok); code != 200 {
			t.Fatalf("view-only GET: %d %s", code, body)
		}
		req, _ := http.NewRequest("POST", tg.url+"/s/"+s.ID+"/app/x", strings.NewReader("x=1"))
		req.Header.Set("Authorization", "Bearer "+bobTok)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, body := bob.send(req); resp.StatusCode != 403 {
			t.Fatalf("view-only POST with the owner's connector cookie kept: %d %s, want 403", resp.StatusCode, body)
		}
	}

	owner()
	tg.g.revoke(t.Context(), revokeEvent{Reason: "test", Token: "unrelated"})
	if _, ok := tg.g.fast.hop(ownerKey, tg.g.now()); ok {
		t.Fatal("a connector cookie survived a revocation")
	}
}
