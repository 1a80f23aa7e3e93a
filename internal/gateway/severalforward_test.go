package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/forward"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/session"
)

// TestSeveralGatewaysForward: two gateways on one PostgreSQL behind
// HAProxy. A node's `airlock forward` tunnel, dialled through the
// balancer, reaches one of them; the app's URL answers through either
// (the other opens its streams through the holder); the holder is killed
// and the tunnel comes back through the other, same URL; the forward
// stopped through the survivor is gone. Someone who is not a gateway of
// the site cannot use the holder's peer endpoint.
func TestSeveralGatewaysForward(t *testing.T) {
	t.Parallel()
	gws := severalGateways(t, "fwd-gw", nil, nil)
	lb := behindHAProxy(t, gws)

	target := helloApp(t)
	fc := lb.forwardClient(lb.client().loginToken("alice").token)
	f := startNodeForward(t, fc, "lab", target, forward.Backoff{Min: 100 * time.Millisecond, Max: time.Second})
	ups, served := f.ups, f.served
	holder := func() int {
		for i, tg := range gws {
			if tg == nil {
				continue
			}
			tg.g.fwd.mu.Lock()
			_, ok := tg.g.fwd.tunnels[f.ID]
			tg.g.fwd.mu.Unlock()
			if ok {
				return i
			}
		}
		return -1
	}
	var held int
	if err := realtest.WaitFor(10*time.Second, func() error {
		if held = holder(); held < 0 {
			return errors.New("no gateway holds the tunnel")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The same URL, with each gateway's port: one answers through the
	// tunnel it holds, the other through the holder.
	at := func(tg *testGateway) string {
		u, err := url.Parse(f.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tg.url, "https://"))
		u.Host = net.JoinHostPort(u.Hostname(), port)
		return u.String()
	}
	visitors := make([]*client, len(gws))
	for i, tg := range gws {
		visitors[i] = tg.client().loginCookie("alice").reachApps()
		if err := visitors[i].waitVisit(at(tg)+"x", 200, "hello through /x"); err != nil {
			t.Fatalf("through gateway %d (the tunnel is on %d): %v", i, held, err)
		}
	}
	if !strings.HasPrefix(f.URL, "https://lab-alice.") {
		t.Fatalf("the forward's URL is %s", f.URL)
	}

	// The name is taken at the other gateway too, while the tunnel is up.
	if _, err := gws[1-held].forwardClient(fc.Token).Create(context.Background(), "lab", ""); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("the same name again through the gateway not holding it: %v", err)
	}

	// Not a gateway of this site: no proof, or a proof made for another
	// connection, is refused, and nothing reaches the app.
	for _, proof := range []string{"", strings.Repeat("0", 64)} {
		code, body := peerAsk(t, gws[held], f.ID, proof)
		if code != 403 || !strings.Contains(body, "bad_peer_proof") {
			t.Fatalf("peer stream with proof %q: %d %s", proof, code, body)
		}
	}

	// The holder dies; the node's tunnel comes back through the balancer
	// to the other gateway, and the URL works there as before.
	other := 1 - held
	gws[held].g.lease.crashed.Store(true)
	gws[held].stop()
	gws[held] = nil
	select {
	case <-ups:
	case <-time.After(60 * time.Second):
		t.Fatal("the tunnel did not come back through the balancer")
	}
	if err := visitors[other].waitVisit(at(gws[other])+"again", 200, "hello through /again"); err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	// The survivor serves its tunnel before the store has it as holder.
	if err := realtest.WaitFor(10*time.Second, func() error {
		s, err := gws[other].cfg.Store.GetSession(context.Background(), f.ID)
		if err != nil {
			return err
		}
		if _, h, _ := tunnelHolder(s.Endpoints[contract.ConnApp]); h != gws[other].g.peerAddr() {
			return fmt.Errorf("the store says the tunnel is held at %q, want the survivor %q", h, gws[other].g.peerAddr())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Stopped through the survivor: the node is told, the URL is gone.
	c := gws[other].client().loginToken("alice")
	if code, body := c.do("DELETE", "/api/v1/sessions/"+f.ID, nil, nil); code != 202 {
		t.Fatalf("stop: %d %s", code, body)
	}
	select {
	case err := <-served:
		served <- err
		if !errors.Is(err, forward.ErrStopped) {
			t.Fatalf("the node's forward ended with %v, want ErrStopped", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node was not told the forward stopped")
	}
	if resp, _ := visitors[other].visit(at(gws[other]) + "x"); resp.StatusCode == 200 {
		t.Fatal("the stopped forward still answers")
	}
}

// helloApp is an app on a UNIX socket that answers "hello through PATH".
func helloApp(t *testing.T) string {
	return goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello through "+r.URL.Path)
	}))
}

// peerAsk asks tg's peer endpoint for a stream to forward id with proof,
// as someone who is not a gateway of the site, and returns the answer.
func peerAsk(t *testing.T, tg *testGateway, id, proof string) (int, string) {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(tg.url, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest("GET", tg.url+"/api/v1/peer/forwards/"+id+"/stream", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", peerUpgrade)
	if proof != "" {
		req.Header.Set(peerProofHeader, proof)
	}
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSeveralGatewaysAppSignIn: the app host's sign-in across two
// gateways on one PostgreSQL, as a balancer may split it: the code minted
// by one is spent at the other, once; the cookie the second sets opens the
// app at the first; a forged cookie opens nothing; after a logout the
// cookie is not taken back from its seal.
func TestSeveralGatewaysAppSignIn(t *testing.T) {
	t.Parallel()
	gws := severalGateways(t, "app-gw", nil, nil)
	target := helloApp(t)
	owner := gws[0].client().loginToken("alice")
	f := serveForward(t, gws[0], owner.token, "web", target)
	owner.waitStateFor(f.ID, "ready", 10*time.Second)
	portOf := func(tg *testGateway) string {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tg.url, "https://"))
		return port
	}
	onto := func(u *url.URL, tg *testGateway) string {
		v := *u
		v.Host = net.JoinHostPort(v.Hostname(), portOf(tg))
		return v.String()
	}
	get := func(c *client, u string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		return c.send(req)
	}

	alice := gws[0].client().loginCookie("alice").reachApps()
	resp, body := get(alice, gws[0].url+"/s/"+f.ID+"/app/page")
	if resp.StatusCode != 303 {
		t.Fatalf("the gateway's handshake: %d %s", resp.StatusCode, body)
	}
	codeURL, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || codeURL.Path != appAuthPath {
		t.Fatalf("handshake to %q", resp.Header.Get("Location"))
	}
	// Spent at the other gateway.
	resp, body = get(alice, onto(codeURL, gws[1]))
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/page" {
		t.Fatalf("code minted by gateway 0 spent at gateway 1: %d %s", resp.StatusCode, body)
	}
	// Once: not again at either.
	for i, tg := range gws {
		if resp, body := get(alice, onto(codeURL, tg)); resp.StatusCode != 400 {
			t.Fatalf("the spent code again at gateway %d: %d %s", i, resp.StatusCode, body)
		}
	}
	page, _ := url.Parse(f.URL + "page")
	for i, tg := range gws {
		if resp, body := get(alice, onto(page, tg)); resp.StatusCode != 200 || body != "hello through /page" {
			t.Fatalf("gateway 1's cookie at gateway %d: %d %s", i, resp.StatusCode, body)
		}
	}

	// A forged or altered sealed cookie opens nothing.
	var sealed string
	for _, ck := range alice.http.Jar.Cookies(page) {
		if ck.Name == appCookie {
			sealed = ck.Value
		}
	}
	if !strings.HasPrefix(sealed, sealedCookiePrefix) {
		t.Fatalf("the app cookie %q is not sealed", sealed)
	}
	flip := []byte(sealed)
	flip[len(flip)-5] ^= 1
	for _, forged := range []string{string(flip), sealedCookiePrefix + "AAAA", sealedCookiePrefix + strings.Repeat("A", 5000)} {
		mallory := gws[0].client().reachApps()
		mallory.http.Jar.SetCookies(page, []*http.Cookie{{Name: appCookie, Value: forged}})
		if resp, body := get(mallory, onto(page, gws[0])); resp.StatusCode == 200 {
			t.Fatalf("a forged cookie opened the app: %s", body)
		}
	}

	// Logged out through gateway 1: the cookie stops at both, and is not
	// taken back from its seal.
	lo := gws[1].client()
	lo.http.Jar = alice.http.Jar
	req, _ := http.NewRequest("POST", gws[1].url+"/logout", nil)
	req.Header.Set("Origin", gws[1].url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, body := lo.send(req); resp.StatusCode != 303 {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}
	for i, tg := range gws {
		if err := realtest.WaitFor(10*time.Second, func() error {
			if resp, body := get(alice, onto(page, tg)); resp.StatusCode == 200 {
				return fmt.Errorf("gateway %d still opens the app: %s", i, body)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The login cookie is gone from the jar by now; the stolen app cookie
	// alone, at a gateway that has not seen it since, opens nothing.
	thief := gws[0].client().reachApps()
	thief.http.Jar.SetCookies(page, []*http.Cookie{{Name: appCookie, Value: sealed}})
	if resp, body := get(thief, onto(page, gws[0])); resp.StatusCode == 200 {
		t.Fatalf("the logged-out cookie opened the app: %s", body)
	}
}

// TestSeveralGatewaysForwardOrphan: the gateway holding a forward's
// tunnel goes and the node cannot come back to any other (it knows only
// that gateway's address, as a node that is gone too would never come
// back). One holder is killed (the store still names it as the holder),
// another shut down (it cleared its name on the way out). No gateway's
// forwardJanitor has these forwards any more; the leader ends each once
// nothing has answered at its holder's address (or none is named) for the
// grace and a margin. While the holders live, past the same time, the
// leader keeps them. Visits to the dead URL meanwhile do not keep it.
func TestSeveralGatewaysForwardOrphan(t *testing.T) {
	t.Parallel()
	short := func(c *Config) { c.Forward.Grace, c.Limits.SingleShotGrace = 2*time.Second, 3*time.Second }
	gws := severalGateways(t, "orphan-gw", short, short, short)
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	// A node's forward through gateway i, its tunnel up there.
	serve := func(i int, name string) *nodeForward {
		fc := gws[i].forwardClient(gws[i].client().loginToken("alice").token)
		return startNodeForward(t, fc, name, target, forward.Backoff{Min: 100 * time.Millisecond, Max: time.Second})
	}
	kf, sf := serve(0, "killed"), serve(1, "shut")
	killed, shut := kf.ID, sf.ID
	// Alice keeps visiting the killed one's URL through the survivor.
	u, err := url.Parse(kf.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(gws[2].url, "https://"))
	u.Host = net.JoinHostPort(u.Hostname(), port)
	visitor := gws[2].client().loginCookie("alice").reachApps()
	get := func(id string) *session.Session {
		s, err := gws[2].cfg.Store.GetSession(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Past the grace and the leader's margin with the holders alive: kept.
	alive := time.Now().Add(2*time.Second + forwardReapMargin + 3*time.Second)
	if err := realtest.WaitFor(30*time.Second, func() error {
		if time.Now().Before(alive) {
			return errors.New("not yet past the grace")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{killed, shut} {
		if s := get(id); s.State != session.Ready {
			t.Fatalf("with its holder alive, forward %s is %s (%s), want ready", id, s.State, s.Reason)
		}
	}

	// A gateway going away clears its name from the forwards it held
	// when its tunnel handlers end before its store closes, which is a
	// race: the store is set as each way of going leaves it. Killed: the
	// holder still named; shut down: none named.
	endpoint := get(killed).Endpoints[contract.ConnApp]
	if _, h, _ := tunnelHolder(endpoint); h != gws[0].g.peerAddr() {
		t.Fatalf("forward %s is held at %q, want gateway 0's %q", killed, h, gws[0].g.peerAddr())
	}
	gws[0].g.lease.crashed.Store(true)
	gws[0].stop()
	gws[1].stop()
	for id, ep := range map[string]string{killed: endpoint, shut: forwardEndpointPrefix + shut} {
		if _, err := gws[2].cfg.Store.UpdateSession(context.Background(), id, func(s *session.Session) error {
			s.Endpoints = map[string]string{contract.ConnApp: ep}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{killed, shut} {
		if err := realtest.WaitFor(60*time.Second, func() error {
			visitor.visit(u.String())
			s := get(id)
			if s.State != session.Ended {
				return fmt.Errorf("the forward is %s", s.State)
			}
			if !strings.Contains(s.Reason, "with its gateway") {
				t.Fatalf("forward %s ended for %q", id, s.Reason)
			}
			return nil
		}); err != nil {
			t.Fatalf("the orphaned forward %s was not ended: %v", id, err)
		}
	}
}
