package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// TestStrictBodies sends every API route that takes a body (or must take
// none) each way a body can be wrong, and checks the status, that the
// message names the problem, and that the store is unchanged: no token,
// session or share was made and no session stopped.
func TestStrictBodies(t *testing.T) {
	tg := startGateway(t, "", nil, "admin")
	c := tg.client().loginToken("admin")
	ctx := context.Background()
	st := tg.cfg.Store
	// A session of the admin's in the store, for the routes under
	// /sessions/ID: ended, so no runner is involved and nothing can stop it.
	sid := "s-0123456789ab"
	if err := st.CreateSession(ctx, &session.Session{ID: sid, Owner: "admin", Profile: "app", State: session.Queued, Backend: "local"}); err != nil {
		t.Fatal(err)
	}

	type fault struct {
		name, ct, body string
		status         int
		want           string // in the error message
	}
	big := `{"name": "` + strings.Repeat("a", 1<<20) + `"}`
	// Faults every route refuses, whatever it takes.
	common := []fault{
		{"text/plain", "text/plain", `{}`, 415, "send application/json"},
		{"form", "application/x-www-form-urlencoded", `a=b`, 415, "send application/json"},
		{"json with another charset", "application/json; charset=latin1", `{}`, 415, "charset"},
		{"1 MiB", "application/json", big, 413, "over 64 KiB"},
		{"not an object", "application/json", `[1]`, 400, "want a JSON object"},
		{"null", "application/json", `null`, 400, "want a JSON object"},
		{"unknown field", "application/json", `{"surprise": 1}`, 400, `unknown field "surprise"`},
		{"cut short", "application/json", `{"a`, 400, "cut short"},
	}
	routes := []struct {
		method, path string
		good         string // a body the route takes ("": none)
		faults       []fault
	}{
		{"POST", "/api/v1/tokens", `{"name": "ci"}`, []fault{
			{"no Content-Type", "", `{"name": "ci"}`, 415, "no Content-Type"},
			{"trailing data", "application/json", `{"name": "ci"} {"name": "x"}`, 400, "data after the JSON object"},
			{"trailing garbage", "application/json", `{"name": "ci"}garbage`, 400, "after the JSON object"},
			{"wrong type", "application/json", `{"name": 7}`, 400, `field "name"`},
			{"name too long", "application/json", `{"name": "` + strings.Repeat("n", 101) + `"}`, 400, `field "name"`},
			{"name with control characters", "application/json", `{"name": "a\u001b[2Jb"}`, 400, `field "name"`},
		}},
		{"POST", "/api/v1/sessions", `{"profile": "app"}`, []fault{
			{"no Content-Type", "", `{"profile": "app"}`, 415, "no Content-Type"},
			{"empty", "application/json", ``, 400, "empty"},
			{"trailing data", "application/json", `{"profile": "app"}{}`, 400, "data after the JSON object"},
			{"wrong type", "application/json", `{"profile": "app", "cpus": "2"}`, 400, `field "cpus"`},
		}},
		{"POST", "/api/v1/sessions/" + sid + "/shares", `{"mode": "view"}`, []fault{
			{"no Content-Type", "", `{"mode": "view"}`, 415, "no Content-Type"},
			{"empty", "application/json", ``, 400, "empty"},
			{"unknown share field", "application/json", `{"mode": "view", "expires": "2099-01-01"}`, 400, `unknown field "expires"`},
			{"trailing data", "application/json", `{"mode": "view"} x`, 400, "after the JSON object"},
			{"wrong type", "application/json", `{"mode": "view", "ttl": 3600}`, 400, `field "ttl"`},
		}},
		{"DELETE", "/api/v1/sessions/" + sid + "/shares/sh-nothere", "", []fault{
			{"a body", "application/json", `{"mode": "view"}`, 400, `unknown field "mode"`},
		}},
		{"DELETE", "/api/v1/tokens/t-nothere", "", []fault{
			{"a body", "application/json", `{"id": "x"}`, 400, `unknown field "id"`},
		}},
		{"DELETE", "/api/v1/sessions/" + sid, "", []fault{
			{"a body", "application/json", `{"reason": "x"}`, 400, `unknown field "reason"`},
		}},
		{"POST", "/api/v1/admin/stop-all", "", []fault{
			{"a body", "application/json", `{"all": true}`, 400, `unknown field "all"`},
		}},
		{"POST", "/api/v1/admin/sessions/" + sid + "/vm/reset", "", []fault{
			{"a body", "application/json", `{"force": true}`, 400, `unknown field "force"`},
		}},
	}
	tokens := func() int {
		ts, err := st.ListTokens(ctx, "admin")
		if err != nil {
			t.Fatal(err)
		}
		return len(ts)
	}
	before := tokens()
	for _, rt := range routes {
		for _, f := range append(common, rt.faults...) {
			t.Run(rt.method+" "+rt.path+"/"+f.name, func(t *testing.T) {
				req, _ := http.NewRequest(rt.method, tg.url+rt.path, strings.NewReader(f.body))
				if f.ct != "" {
					req.Header.Set("Content-Type", f.ct)
				}
				req.Header.Set("Authorization", "Bearer "+c.token)
				resp, err := c.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e struct {
					Error struct{ Code, Message string }
				}
				json.Unmarshal(b, &e)
				if resp.StatusCode != f.status || !strings.Contains(e.Error.Message, f.want) {
					t.Errorf("%d %q, want %d and a message with %q", resp.StatusCode, e.Error.Message, f.status, f.want)
				}
			})
		}
	}
	if n := tokens(); n != before {
		t.Errorf("%d tokens made by refused requests", n-before)
	}
	if ss, _ := st.ListSessions(ctx, store.SessionFilter{}); len(ss) != 1 {
		t.Errorf("%d sessions in the store after refused launches, want the 1 made by the test", len(ss))
	}
	if shs, _ := st.ListShares(ctx, sid); len(shs) != 0 {
		t.Errorf("%d shares made by refused requests", len(shs))
	}
	if s, _ := st.GetSession(ctx, sid); s.State != session.Queued {
		t.Errorf("session is %s after refused requests, want queued", s.State)
	}

	// The same routes take a good body (or none), so the refusals above
	// are about the bodies alone.
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/api/v1/tokens", `{"name": "ci"}`, 201},
		{"POST", "/api/v1/tokens", ``, 201},
		{"POST", "/api/v1/sessions/" + sid + "/shares", `{"mode": "view", "ttl": "1h"}`, 201},
		{"DELETE", "/api/v1/tokens/t-nothere", `{}`, 404},
	} {
		req, _ := http.NewRequest(tc.method, tg.url+tc.path, strings.NewReader(tc.body))
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json; charset=UTF-8")
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s %s: %d %s, want %d", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.status)
		}
	}
}

// fakeRemote is a remote backend that runs nothing: enough for the
// gateway to take registrations, and to count those that reach it.
type fakeRemote struct{ registered atomic.Int64 }

func (f *fakeRemote) Name() string                                       { return "fake-remote" }
func (f *fakeRemote) Start(context.Context, backend.Job) (string, error) { return "job-1", nil }
func (f *fakeRemote) Stop(context.Context, string, string) error         { return nil }
func (f *fakeRemote) Watch(ctx context.Context, _, _ string) (<-chan backend.Event, error) {
	ch := make(chan backend.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}
func (f *fakeRemote) Register(context.Context, string, string, net.IP, registration.Registration) (backend.Event, error) {
	f.registered.Add(1)
	return backend.Event{}, nil
}
func (f *fakeRemote) Runners(context.Context) (map[string]string, error) {
	return map[string]string{"s-0123456789ab": "job-1"}, nil
}

// TestStrictRegistrationBody: a runner's registration, with the session's
// good token, and a body that is not strictly a registration: refused
// before the backend sees it, the session still queued.
func TestStrictRegistrationBody(t *testing.T) {
	fake := &fakeRemote{}
	tg := startGateway(t, "", func(c *Config) {
		c.Backend = fake
		c.RegisterURL = "https://127.0.0.1/"
	})
	ctx := context.Background()
	sid := "s-0123456789ab"
	if err := tg.cfg.Store.CreateSession(ctx, &session.Session{ID: sid, Owner: "alice", Profile: "app", State: session.Queued, Backend: fake.Name(), BackendRef: "job-1"}); err != nil {
		t.Fatal(err)
	}
	token := tg.g.registerToken(sid)
	for _, tc := range []struct {
		name, ct, body string
		status         int
		want           string
	}{
		{"no Content-Type", "", `{"event": "ready"}`, 415, "no Content-Type"},
		{"text/plain", "text/plain", `{"event": "ready"}`, 415, "send application/json"},
		{"1 MiB", "application/json", `{"reason": "` + strings.Repeat("r", 1<<20) + `"}`, 413, "over 64 KiB"},
		{"unknown field", "application/json", `{"event": "ready", "host": "10.0.0.1"}`, 400, `unknown field "host"`},
		{"trailing data", "application/json", `{"event": "ready"}{"event": "exit"}`, 400, "data after the JSON object"},
		{"wrong type", "application/json", `{"event": "ready", "ports": {"console": "5901"}}`, 400, `field "ports"`},
		{"empty", "application/json", ``, 400, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", tg.url+registration.Path(sid), strings.NewReader(tc.body))
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := tg.client().http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(e.Error.Message, tc.want) {
				t.Errorf("%d %q, want %d and a message with %q", resp.StatusCode, e.Error.Message, tc.status, tc.want)
			}
		})
	}
	if n := fake.registered.Load(); n != 0 {
		t.Errorf("%d refused registrations reached the backend", n)
	}
	if s, _ := tg.cfg.Store.GetSession(ctx, sid); s.State != session.Queued {
		t.Errorf("session is %s after refused registrations, want queued", s.State)
	}
}
