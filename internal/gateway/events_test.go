package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/portal"
)

// eventStream is an open GET /api/v1/sessions/{id}/events, read by a
// goroutine: each "state" event arrives on states, and every data line is
// kept in seen (for the checks that nothing else ever arrives).
type eventStream struct {
	states chan sessionOut
	closed chan struct{}
	mu     sync.Mutex
	seen   []string
}

// openEvents opens session id's event stream as c. On a status other than
// 200 it returns nil and the status and body.
func openEvents(t *testing.T, c *client, id string) (*eventStream, int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", c.tg.url+"/api/v1/sessions/"+id+"/events", nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// c.http's timeout covers reading the body; a stream has none.
	hc := &http.Client{Jar: c.http.Jar, Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, string(b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("event stream Content-Type %q", ct)
	}
	es := &eventStream{states: make(chan sessionOut, 64), closed: make(chan struct{})}
	t.Cleanup(func() { cancel(); <-es.closed })
	go func() {
		defer close(es.closed)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var event, data string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
				es.mu.Lock()
				es.seen = append(es.seen, data)
				es.mu.Unlock()
			case line == "":
				if event == "state" {
					var s sessionOut
					if json.Unmarshal([]byte(data), &s) == nil {
						es.states <- s
					}
				}
				event, data = "", ""
			}
		}
	}()
	return es, 200, ""
}

// waitState returns the first event in state want, failing on the
// stream's end or d without one.
func (es *eventStream) waitState(t *testing.T, want string, d time.Duration) sessionOut {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case s := <-es.states:
			t.Logf("event: %s %s %s", s.ID, s.State, s.Reason)
			if s.State == want {
				return s
			}
		case <-es.closed:
			// Events read before the end may still be queued.
			select {
			case s := <-es.states:
				t.Logf("event: %s %s %s", s.ID, s.State, s.Reason)
				if s.State == want {
					return s
				}
				continue
			default:
			}
			t.Fatalf("event stream ended before state %s", want)
		case <-deadline:
			t.Fatalf("no %s event in %v", want, d)
		}
	}
}

// waitClosed fails unless the stream ends within d.
func (es *eventStream) waitClosed(t *testing.T, what string, d time.Duration) {
	t.Helper()
	select {
	case <-es.closed:
	case <-time.After(d):
		t.Fatalf("%s: event stream still open %v later", what, d)
	}
}

func (es *eventStream) data() []string {
	es.mu.Lock()
	defer es.mu.Unlock()
	return append([]string(nil), es.seen...)
}

// TestSessionEvents (issue 10): the session's state is pushed as it
// changes, from the first answer to the end, after which the stream ends.
func TestSessionEvents(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	alice := tg.client().loginToken("alice")
	s := alice.start(map[string]any{"profile": "app"})
	es, code, body := openEvents(t, alice, s.ID)
	if es == nil {
		t.Fatalf("open events: %d %s", code, body)
	}
	// The first event is the state now, whatever it is; then it gets ready.
	select {
	case first := <-es.states:
		if first.ID != s.ID || first.State == "" {
			t.Fatalf("first event %+v", first)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no first event")
	}
	es.waitState(t, "ready", 30*time.Second)
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	es.waitState(t, "ended", 30*time.Second)
	es.waitClosed(t, "after the end", 5*time.Second)
}

// TestSessionEventsOnlyVisible (issue 10) attacks the event stream as
// another portal user: bob asks for alice's session's stream (refused
// exactly as an unknown id), follows his own session while alice's
// changes (none of hers reaches him), and follows hers by a share link
// that alice then revokes, or that expires (the stream closes at once,
// not at its next heartbeat), or that is revoked where this gateway does
// not see it (the next change is not sent: every event is re-checked).
func TestSessionEventsOnlyVisible(t *testing.T) {
	tg := startGateway(t, "", nil, "alice", "bob")
	alice := tg.client().loginToken("alice")
	bob := tg.client().loginToken("bob")
	a := alice.launch("app")
	b := bob.launch("app")

	// Another user's session is not there, as an unknown one is not.
	_, unknownCode, unknownBody := openEvents(t, bob, "s-000000000000")
	es, code, body := openEvents(t, bob, a.ID)
	if es != nil || code != unknownCode || body != unknownBody {
		t.Fatalf("bob asking for alice's events: %d %q; for an unknown session: %d %q", code, body, unknownCode, unknownBody)
	}

	// Bob's own stream carries his session only, while alice's changes.
	mine, code, body := openEvents(t, bob, b.ID)
	if mine == nil {
		t.Fatalf("bob's own events: %d %s", code, body)
	}
	mine.waitState(t, "ready", 10*time.Second)
	hers, code, body := openEvents(t, alice, a.ID)
	if hers == nil {
		t.Fatalf("alice's events: %d %s", code, body)
	}
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+a.ID, nil, nil); code != 202 {
		t.Fatalf("stop alice's: %d %s", code, body)
	}
	hers.waitState(t, "ended", 30*time.Second)
	if code, body := bob.do("DELETE", "/api/v1/sessions/"+b.ID, nil, nil); code != 202 {
		t.Fatalf("stop bob's: %d %s", code, body)
	}
	mine.waitState(t, "ended", 30*time.Second)
	mine.waitClosed(t, "bob's after its end", 5*time.Second)
	for _, d := range mine.data() {
		if strings.Contains(d, a.ID) || !strings.Contains(d, b.ID) {
			t.Errorf("bob's stream carried %s", d)
		}
	}

	// By a share link: bob sees alice's session until she revokes it.
	bobCookie := tg.client().loginCookie("bob")
	a2 := alice.launch("app")
	shID := shareLink(t, alice, bobCookie, a2.ID, "view", "1h")
	shared, code, body := openEvents(t, bobCookie, a2.ID)
	if shared == nil {
		t.Fatalf("events by a share link: %d %s", code, body)
	}
	shared.waitState(t, "ready", 10*time.Second)
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+a2.ID+"/shares/"+shID, nil, nil); code != 204 {
		t.Fatalf("revoke share: %d %s", code, body)
	}
	// The heartbeat is 15 s: closing within 3 s is the revocation's doing.
	shared.waitClosed(t, "share revoked", 3*time.Second)
	if _, code, _ := openEvents(t, bobCookie, a2.ID); code != unknownCode {
		t.Errorf("events by a revoked share link: %d, want %d", code, unknownCode)
	}

	// A share link that expires closes the stream when it does.
	shareLink(t, alice, bobCookie, a2.ID, "view", "2s")
	expiring, code, body := openEvents(t, bobCookie, a2.ID)
	if expiring == nil {
		t.Fatalf("events by a second share link: %d %s", code, body)
	}
	expiring.waitClosed(t, "share expired", 5*time.Second)

	// A share link revoked where this gateway does not see it (another
	// gateway on the same database: straight in the store, no revoke
	// event): the next change is not sent, as a new request would be
	// refused, and the stream closes.
	farID := shareLink(t, alice, bobCookie, a2.ID, "view", "1h")
	far, code, body := openEvents(t, bobCookie, a2.ID)
	if far == nil {
		t.Fatalf("events by a third share link: %d %s", code, body)
	}
	far.waitState(t, "ready", 10*time.Second)
	if err := tg.cfg.Store.RevokeShare(context.Background(), a2.ID, farID); err != nil {
		t.Fatal(err)
	}

	// Nothing of alice's session reached bob after the revocations.
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+a2.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	alice.waitState(a2.ID, "ended")
	far.waitClosed(t, "share revoked by another gateway", 5*time.Second)
	for _, d := range append(append(shared.data(), expiring.data()...), far.data()...) {
		if strings.Contains(d, `"state":"stopping"`) || strings.Contains(d, `"state":"ended"`) {
			t.Errorf("a revoked or expired share's stream carried %s", d)
		}
	}
}

// TestSessionEventsInBrowser (issue 10): in real headless Chromium, the
// portal follows a launch to ready and then the session to its end (the
// gateway stops it) without asking for the session's state even once:
// the state is pushed. On main the page polled every 500 ms while the
// session started and every few seconds after.
func TestSessionEventsInBrowser(t *testing.T) {
	needBrowser(t)
	p, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, "", func(c *Config) { c.Portal = p }, "alice")
	alice := tg.client().loginToken("alice")
	b := startBrowser(t, "events.mjs", map[string]string{"base": tg.url, "password": testPassword, "owner": "alice", "profile": "app"})
	opened := b.wait("opened", 90*time.Second)
	id, _ := opened["id"].(string)
	if id == "" {
		t.Fatalf("no session id from the browser: %v", opened)
	}
	alice.waitState(id, "ready")
	if code, body := alice.do("DELETE", "/api/v1/sessions/"+id, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	b.send("stopped")
	m := b.wait("ended", 60*time.Second)
	if errs, _ := m["errors"].([]any); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
	if m["follow"] != "events" {
		t.Errorf("the page followed the session by %v, want events", m["follow"])
	}
	if polls, _ := m["polls"].(float64); polls != 0 {
		t.Errorf("the page asked for the session's state %v times; the state should have been pushed", polls)
	}
	if streams, _ := m["streams"].(float64); streams < 1 {
		t.Errorf("the page opened %v event streams", streams)
	}
}
