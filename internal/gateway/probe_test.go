package gateway

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/session"
)

// TestSessionIDsCannotBeProbed asks every path that names a session for
// another user's session and for an id nobody has, as that user would
// (their token, with and without a made-up share cookie), and wants the
// same answer for both: status, body and headers.
func TestSessionIDsCannotBeProbed(t *testing.T) {
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) { c.Portal = p }, "alice", "mallory")
	mallory := tg.client().loginToken("mallory")
	// Alice's sessions, in the store: one queued and one ready with both
	// connectors, so each check the paths make before the owner's is met.
	ctx := context.Background()
	existing := []*session.Session{
		{ID: "s-a11ce0000001", Owner: "alice", Profile: "app", State: session.Queued, Backend: "local"},
		{ID: "s-a11ce0000002", Owner: "alice", Profile: "desktop", State: session.Queued, Backend: "local"},
	}
	for _, s := range existing {
		if err := tg.cfg.Store.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tg.cfg.Store.UpdateSession(ctx, existing[1].ID, func(s *session.Session) error {
		s.Endpoints = map[string]string{"console": "unix:/nonexistent", "app": "unix:/nonexistent"}
		if err := s.Move(session.Starting, "", tg.g.now()); err != nil {
			return err
		}
		return s.Move(session.Ready, "", tg.g.now())
	}); err != nil {
		t.Fatal(err)
	}
	unknown := "s-0000deadbeef"

	paths := []struct{ method, path, body string }{
		{"GET", "/s/ID/app/", ""},
		{"POST", "/s/ID/app/form", `{}`},
		{"GET", "/s/ID/console/", ""},
		{"GET", "/s/ID/nothere/", ""},
		{"GET", "/sessions/ID", ""},
		{"GET", "/api/v1/sessions/ID", ""},
		{"DELETE", "/api/v1/sessions/ID", ""},
		{"GET", "/api/v1/sessions/ID/shares", ""},
		{"POST", "/api/v1/sessions/ID/shares", `{"mode": "control"}`},
		{"DELETE", "/api/v1/sessions/ID/shares/sh-x", ""},
	}
	type answer struct {
		status int
		body   string
		header http.Header
	}
	ask := func(method, path, body, id string, shareCookie bool) answer {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, tg.url+strings.ReplaceAll(path, "ID", id), rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+mallory.token)
		if strings.HasSuffix(path, "/console/") {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		if shareCookie {
			req.AddCookie(&http.Cookie{Name: shareCookiePrefix + id, Value: "made-up"})
		}
		resp, err := mallory.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header.Clone()
		h.Del("Date")
		return answer{resp.StatusCode, string(b), h}
	}
	for _, s := range existing {
		for _, pt := range paths {
			for _, cookie := range []bool{false, true} {
				name := pt.method + " " + strings.ReplaceAll(pt.path, "ID", s.ID)
				if cookie {
					name += " with a share cookie"
				}
				t.Run(name, func(t *testing.T) {
					got := ask(pt.method, pt.path, pt.body, s.ID, cookie)
					want := ask(pt.method, pt.path, pt.body, unknown, cookie)
					if want.status != http.StatusNotFound {
						t.Errorf("unknown id: %d %s, want 404", want.status, want.body)
					}
					if got.status != want.status || got.body != want.body {
						t.Errorf("another user's session: %d %q\nunknown id: %d %q", got.status, got.body, want.status, want.body)
					}
					if !maps.EqualFunc(got.header, want.header, slices.Equal) {
						t.Errorf("headers differ:\nanother user's session: %v\nunknown id: %v", got.header, want.header)
					}
				})
			}
		}
	}
	if shs, _ := tg.cfg.Store.ListShares(ctx, existing[0].ID); len(shs) != 0 {
		t.Errorf("mallory made %d shares of alice's session", len(shs))
	}
}
