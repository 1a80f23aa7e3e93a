package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
)

// pgFaulty is the shared PostgreSQL store with lookups that fail on
// demand, as a database restarting or unreachable fails them. It embeds
// the store itself, not store.Store, so that the gateway still finds the
// leases, handoffs and broadcast that make it one of several.
type pgFaulty struct {
	*postgres.DB
	fail   atomic.Bool
	lists  atomic.Int64 // ListSessions calls for one user's sessions
	logins atomic.Int64 // LoginByHash calls
}

func (f *pgFaulty) LoginByHash(ctx context.Context, h []byte) (session.Login, error) {
	f.logins.Add(1)
	if f.fail.Load() {
		return session.Login{}, errStoreDown
	}
	return f.DB.LoginByHash(ctx, h)
}

func (f *pgFaulty) ListSessions(ctx context.Context, filter store.SessionFilter) ([]*session.Session, error) {
	if filter.Owner != "" {
		f.lists.Add(1)
	}
	return f.DB.ListSessions(ctx, filter)
}

// TestSeveralGatewaysAppCookieStoreFault attacks a sealed app cookie at a
// gateway that never held it while the store cannot answer. A cookie
// whose login was ended (logged out at the other gateway) must not open
// the app there because the login could not be looked up, nor be kept
// for later; a good cookie is "try again" (503 with Retry-After), not
// sent to sign in again. On main the fault was taken as "the login
// holds": the logged-out cookie opened the app, and stayed in.
func TestSeveralGatewaysAppCookieStoreFault(t *testing.T) {
	t.Parallel()
	var faulty *pgFaulty
	gws := severalGateways(t, "fault-gw", nil, func(c *Config) {
		faulty = &pgFaulty{DB: c.Store.(*postgres.DB)}
		c.Store = faulty
	})
	target := helloApp(t)
	owner := gws[0].client().loginToken("alice")
	f := serveForward(t, gws[0], owner.token, "web", target)
	owner.waitStateFor(f.ID, "ready", 10*time.Second)
	page, _ := url.Parse(f.URL + "page")
	onto := func(u *url.URL, tg *testGateway) string {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tg.url, "https://"))
		v := *u
		v.Host = net.JoinHostPort(v.Hostname(), port)
		return v.String()
	}
	get := func(c *client, u string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		return c.send(req)
	}
	// signIn gives a fresh login's sealed app cookie, made and spent at
	// gateway 0 only, and the client holding that login.
	signIn := func() (string, *client) {
		c := gws[0].client().loginCookie("alice").reachApps()
		resp, body := get(c, gws[0].url+"/s/"+f.ID+"/app/page")
		if resp.StatusCode != 303 {
			t.Fatalf("handshake: %d %s", resp.StatusCode, body)
		}
		code, _ := url.Parse(resp.Header.Get("Location"))
		if resp, body := get(c, onto(code, gws[0])); resp.StatusCode != 303 {
			t.Fatalf("code spent at gateway 0: %d %s", resp.StatusCode, body)
		}
		for _, ck := range c.http.Jar.Cookies(page) {
			if ck.Name == appCookie && strings.HasPrefix(ck.Value, sealedCookiePrefix) {
				return ck.Value, c
			}
		}
		t.Fatal("no sealed app cookie")
		return "", nil
	}
	withCookie := func(value string) *client {
		c := gws[1].client().reachApps()
		c.http.Jar.SetCookies(page, []*http.Cookie{{Name: appCookie, Value: value}})
		return c
	}
	ended, endedBy := signIn()
	good, _ := signIn()

	// The first login ends, through gateway 0.
	req, _ := http.NewRequest("POST", gws[0].url+"/logout", nil)
	req.Header.Set("Origin", gws[0].url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, body := endedBy.send(req); resp.StatusCode != 303 {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}

	faulty.fail.Store(true)
	for name, value := range map[string]string{"logged-out": ended, "good": good} {
		resp, body := get(withCookie(value), onto(page, gws[1]))
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("the %s cookie at gateway 1 while the store fails: %d %q, want 503 with Retry-After", name, resp.StatusCode, body)
		}
	}
	faulty.fail.Store(false)
	if resp, body := get(withCookie(ended), onto(page, gws[1])); resp.StatusCode == 200 {
		t.Errorf("the logged-out cookie opens the app at gateway 1 after the fault: %s", body)
	}
	if resp, body := get(withCookie(good), onto(page, gws[1])); resp.StatusCode != 200 || body != "hello through /page" {
		t.Errorf("the good cookie at gateway 1 after the fault: %d %s", resp.StatusCode, body)
	}
	// The logged-out cookie shown again and again (a browser's every
	// request, or whoever kept it): refused without asking the store
	// each time.
	before := faulty.logins.Load()
	for range 20 {
		if resp, body := get(withCookie(ended), onto(page, gws[1])); resp.StatusCode == 200 {
			t.Fatalf("the logged-out cookie opened the app: %s", body)
		}
	}
	if n := faulty.logins.Load() - before; n > 0 {
		t.Errorf("20 requests with a cookie refused before cost %d login lookups", n)
	}
}

// TestSeveralGatewaysForwardMissCache attacks a gateway with app host
// names that name no forward: anyone may send any Host, and on main each
// NAME-USER label cost a store query (the live sessions of USER). Now a
// user's forwards listed a moment ago answer for every other name of
// theirs; a forward started meanwhile through another gateway is not
// missed (the broadcast of its change empties the listing).
func TestSeveralGatewaysForwardMissCache(t *testing.T) {
	t.Parallel()
	var counted *pgFaulty
	gws := severalGateways(t, "miss-gw", nil, func(c *Config) {
		counted = &pgFaulty{DB: c.Store.(*postgres.DB)}
		c.Store = counted
	})
	target := helloApp(t)
	owner := gws[0].client().loginToken("alice")
	f := serveForward(t, gws[0], owner.token, "web", target)
	u, _ := url.Parse(f.URL)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(gws[1].url, "https://"))
	at := func(label string) string {
		return "https://" + net.JoinHostPort(label+strings.TrimPrefix(u.Hostname(), "web-alice"), port) + "/"
	}
	stranger := gws[1].client().reachApps()
	visit := func(label string) int {
		req, _ := http.NewRequest("GET", at(label), nil)
		resp, _ := stranger.send(req)
		return resp.StatusCode
	}

	before := counted.lists.Load()
	for i := range 50 {
		label := fmt.Sprintf("nosuch%d-alice", i)
		if code := visit(label); code != 404 {
			t.Fatalf("%s: %d, want 404", label, code)
		}
	}
	// The listing of alice's forwards may be asked for again if a
	// session changed meanwhile (the lease, the forward's heartbeat):
	// a few queries, not one per request.
	n := counted.lists.Load() - before
	if n > 5 {
		t.Errorf("50 requests for forwards alice does not have cost %d store queries", n)
	}
	t.Logf("50 requests for forwards alice does not have: %d store queries", n)

	// Missed once at gateway 1, then started through gateway 0: found.
	if code := visit("late-alice"); code != 404 {
		t.Fatalf("late-alice before it started: %d, want 404", code)
	}
	serveForward(t, gws[0], owner.token, "late", target)
	if err := realtest.WaitFor(20*time.Second, func() error {
		if code := visit("late-alice"); code == 404 {
			return fmt.Errorf("gateway 1 still has no forward late-alice")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSeveralGatewaysPeerProofRelayed attacks the peer hop from the
// middle: the store's holder address of a forward points at a machine
// that terminates the asking gateway's TLS (which checks no certificate)
// and opens its own to the real holder. Relaying the asking gateway's
// proof verbatim is refused by the holder (the proof is bound to the
// other TLS connection), and a made-up "101" answer with a proof the
// middle cannot make is refused by the asking gateway: the visitor gets
// neither the app through the middle nor the middle's bytes.
func TestSeveralGatewaysPeerProofRelayed(t *testing.T) {
	t.Parallel()
	gws := severalGateways(t, "mitm-gw", nil, nil)
	var hits atomic.Int64
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "hello through "+r.URL.Path)
	}))
	owner := gws[0].client().loginToken("alice")
	f := serveForward(t, gws[0], owner.token, "web", target)
	owner.waitStateFor(f.ID, "ready", 10*time.Second)
	holder := gws[0].g.peerAddr()

	// The middle: relays (fake false) or answers itself (fake true).
	var fake atomic.Bool
	relayed := make(chan int, 16)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if fake.Load() {
					fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s: %s\r\n\r\n", peerUpgrade, peerProofHeader, req.Header.Get(peerProofHeader))
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfrom-mitm!")
					return
				}
				up, err := tls.Dial("tcp", holder, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}})
				if err != nil {
					return
				}
				defer up.Close()
				req.Write(up)
				resp, err := http.ReadResponse(bufio.NewReader(up), req)
				if err != nil {
					return
				}
				relayed <- resp.StatusCode
				resp.Write(c)
			}()
		}
	}()
	if _, err := gws[0].cfg.Store.UpdateSession(context.Background(), f.ID, func(s *session.Session) error {
		s.Endpoints = map[string]string{contract.ConnApp: forwardEndpointPrefix + f.ID + "@" + ln.Addr().String()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	visitor := gws[1].client().loginCookie("alice").reachApps()
	u, _ := url.Parse(f.URL + "x")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(gws[1].url, "https://"))
	u.Host = net.JoinHostPort(u.Hostname(), port)
	before := hits.Load()
	for _, mode := range []bool{false, true} {
		fake.Store(mode)
		resp, body := visitor.visit(u.String())
		if resp.StatusCode == 200 || strings.Contains(body, "from-mitm") || strings.Contains(body, "hello through") {
			t.Errorf("through the middle (answering itself: %v): %d %q", mode, resp.StatusCode, body)
		}
		if !mode {
			select {
			case code := <-relayed:
				if code != 403 {
					t.Errorf("the holder answered a relayed proof with %d, want 403", code)
				}
			case <-time.After(20 * time.Second):
				t.Error("the asking gateway never came through the middle")
			}
		}
	}
	if n := hits.Load() - before; n != 0 {
		t.Errorf("the app was reached %d times through the middle", n)
	}
}

// TestSeveralGatewaysAppCodeRace: one app sign-in code spent at once
// through both gateways, many times over, signs in once; the sealed
// cookie it gives, moved to the host of another forward of the same
// user, opens nothing there at either gateway (held).
func TestSeveralGatewaysAppCodeRace(t *testing.T) {
	t.Parallel()
	gws := severalGateways(t, "race-gw", nil, nil)
	target := helloApp(t)
	owner := gws[0].client().loginToken("alice")
	web := serveForward(t, gws[0], owner.token, "web", target)
	two := serveForward(t, gws[0], owner.token, "two", target)
	owner.waitStateFor(web.ID, "ready", 10*time.Second)
	owner.waitStateFor(two.ID, "ready", 10*time.Second)
	onto := func(u *url.URL, tg *testGateway) string {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tg.url, "https://"))
		v := *u
		v.Host = net.JoinHostPort(v.Hostname(), port)
		return v.String()
	}
	alice := gws[0].client().loginCookie("alice").reachApps()
	req, _ := http.NewRequest("GET", gws[0].url+"/s/"+web.ID+"/app/page", nil)
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, body := alice.send(req)
	if resp.StatusCode != 303 {
		t.Fatalf("handshake: %d %s", resp.StatusCode, body)
	}
	code, _ := url.Parse(resp.Header.Get("Location"))

	const n = 16
	codes := make(chan int, n)
	cookies := make(chan string, n)
	start := make(chan struct{})
	for i := range n {
		c := gws[i%2].client().reachApps()
		u := onto(code, gws[i%2])
		go func() {
			<-start
			resp, err := c.http.Get(u)
			if err != nil {
				codes <- 0
				cookies <- ""
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
			v := ""
			for _, ck := range resp.Cookies() {
				if ck.Name == appCookie {
					v = ck.Value
				}
			}
			cookies <- v
		}()
	}
	close(start)
	spent, sealed := 0, ""
	for range n {
		c, v := <-codes, <-cookies
		switch {
		case c == 303 && v != "":
			spent++
			sealed = v
		case c != 400:
			t.Errorf("the code spent again: %d, want 400", c)
		}
	}
	if spent != 1 {
		t.Fatalf("one code signed in %d times, want once", spent)
	}

	// The cookie on the host of alice's other forward.
	page, _ := url.Parse(two.URL + "page")
	for i, tg := range gws {
		c := tg.client().reachApps()
		c.http.Jar.SetCookies(page, []*http.Cookie{{Name: appCookie, Value: sealed}})
		req, _ := http.NewRequest("GET", onto(page, tg), nil)
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		if resp, body := c.send(req); resp.StatusCode == 200 {
			t.Errorf("forward web's cookie opened forward two at gateway %d: %s", i, body)
		}
	}
	// And on its own host it opens the app (the attack above is the only
	// thing that failed).
	home, _ := url.Parse(web.URL + "page")
	c := gws[1].client().reachApps()
	c.http.Jar.SetCookies(home, []*http.Cookie{{Name: appCookie, Value: sealed}})
	req, _ = http.NewRequest("GET", onto(home, gws[1]), nil)
	if resp, body := c.send(req); resp.StatusCode != 200 || body != "hello through /page" {
		t.Errorf("the cookie on its own host: %d %s", resp.StatusCode, body)
	}
}
