package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/airlock-hpc/airlock/internal/store"
)

// TestLaunchLimitsRace fires 50 launches at once through the HTTP API and
// wants exactly as many sessions as the limits allow, every other launch
// refused with 429 naming the limit. Counting and then inserting, as
// separate steps, let concurrent launches through together.
func TestLaunchLimitsRace(t *testing.T) {
	const n = 50
	// fire launches n sessions at once, launch i by users[i%len(users)],
	// and returns the number that succeeded and the 429 messages.
	fire := func(t *testing.T, tg *testGateway, users ...string) (ok int, refusals []string) {
		t.Helper()
		clients := map[string]*client{}
		for _, u := range users {
			clients[u] = tg.client().loginToken(u)
		}
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		start := make(chan struct{})
		for i := range n {
			c := clients[users[i%len(users)]]
			wg.Go(func() {
				<-start
				req, _ := http.NewRequest("POST", tg.url+"/api/v1/sessions", strings.NewReader(`{"profile": "app"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+c.token)
				resp, err := c.http.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var e struct {
					Error struct{ Code, Message string }
				}
				json.NewDecoder(resp.Body).Decode(&e)
				mu.Lock()
				defer mu.Unlock()
				switch resp.StatusCode {
				case 201:
					ok++
				case 429:
					refusals = append(refusals, e.Error.Message)
				default:
					t.Errorf("launch: %d %+v", resp.StatusCode, e)
				}
			})
		}
		close(start)
		wg.Wait()
		return ok, refusals
	}
	active := func(t *testing.T, tg *testGateway, user string) int {
		t.Helper()
		c, err := tg.cfg.Store.CountActive(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	refusedFor := func(t *testing.T, refusals []string, limit string) {
		t.Helper()
		for _, m := range refusals {
			if !strings.Contains(m, limit) {
				t.Errorf("refusal %q does not name %s", m, limit)
			}
		}
	}

	t.Run("per user", func(t *testing.T) {
		tg := startGateway(t, "", func(c *Config) { c.Limits.MaxSessionsPerUser = 3 }, "alice")
		ok, refusals := fire(t, tg, "alice")
		if ok != 3 || len(refusals) != n-3 {
			t.Errorf("%d launched and %d refused with 429, want 3 and %d", ok, len(refusals), n-3)
		}
		if c := active(t, tg, "alice"); c != 3 {
			t.Errorf("alice has %d active sessions, limit 3", c)
		}
		refusedFor(t, refusals, "max_sessions_per_user")
	})
	t.Run("global", func(t *testing.T) {
		// Two users, 25 launches each: 3 each would be 6, over the 5 of
		// everyone's limit.
		tg := startGateway(t, "", func(c *Config) { c.Limits.MaxSessionsPerUser, c.Limits.MaxSessions = 3, 5 }, "alice", "bob")
		ok, refusals := fire(t, tg, "alice", "bob")
		if ok != 5 || len(refusals) != n-5 {
			t.Errorf("%d launched and %d refused with 429, want 5 and %d", ok, len(refusals), n-5)
		}
		for _, u := range []string{"alice", "bob"} {
			if c := active(t, tg, u); c > 3 {
				t.Errorf("%s has %d active sessions, limit 3", u, c)
			}
		}
		if c := active(t, tg, ""); c != 5 {
			t.Errorf("%d active sessions, limit 5", c)
		}
		for _, m := range refusals {
			if !strings.Contains(m, "(max_sessions)") && !strings.Contains(m, "max_sessions_per_user") {
				t.Errorf("refusal %q names no limit", m)
			}
		}
		ss, _ := tg.cfg.Store.ListSessions(context.Background(), store.SessionFilter{})
		if len(ss) != 5 {
			t.Errorf("%d sessions stored, want 5", len(ss))
		}
	})
}
