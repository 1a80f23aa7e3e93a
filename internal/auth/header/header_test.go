package header

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
)

func TestMain(m *testing.M) { authtest.Main(m, "airlock/internal/auth/header") }

// result is what the test gateway answers: FromRequest's results.
type result struct {
	ID    auth.Identity
	OK    bool
	Err   string
	Trust bool
}

// gateway starts a real HTTP server on 127.0.0.1 that reports what h makes
// of each request.
func gateway(t *testing.T, h *Header) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok, err := h.FromRequest(r)
		res := result{ID: id, OK: ok, Trust: h.Trusted(r)}
		if err != nil {
			res.Err = err.Error()
			if errors.Is(err, ErrUntrusted) {
				res.Err = "untrusted: " + res.Err
			}
			if errors.Is(err, ErrBadHeader) {
				res.Err = "bad: " + res.Err
			}
		}
		json.NewEncoder(w).Encode(res)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// clientFrom returns a client whose connections come from local, an
// address of the loopback network (Linux routes all of 127.0.0.0/8 to lo).
func clientFrom(t *testing.T, local string) *http.Client {
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, u string, hdr http.Header) result {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r result
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func mustNew(t *testing.T, cfg Config) *Header {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestTrustedProxyIsBelieved(t *testing.T) {
	h := mustNew(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, AdminUsers: []string{"root-ish"}})
	srv := gateway(t, h)
	c := clientFrom(t, "127.0.0.1")

	r := get(t, c, srv.URL, http.Header{"X-Forwarded-User": {"alice"}})
	if want := (auth.Identity{User: "alice", Method: "header"}); !r.OK || !reflect.DeepEqual(r.ID, want) || r.Err != "" {
		t.Errorf("alice via trusted proxy: %+v", r)
	}
	r = get(t, c, srv.URL, http.Header{"X-Forwarded-User": {"root-ish"}})
	if !r.OK || !r.ID.Admin {
		t.Errorf("admin via trusted proxy: %+v", r)
	}
	r = get(t, c, srv.URL, nil)
	if r.OK || r.Err != "" || !r.Trust {
		t.Errorf("no header from the proxy: %+v, want not authenticated and no error", r)
	}
	for _, bad := range [][]string{{""}, {"Alice"}, {"alice, bob"}, {"../etc"}, {"alice", "bob"}, {"alice", "alice"}} {
		r = get(t, c, srv.URL, http.Header{"X-Forwarded-User": bad})
		if r.OK || !strings.HasPrefix(r.Err, "bad: ") {
			t.Errorf("header %q from the proxy: %+v, want ErrBadHeader", bad, r)
		}
		if len(bad) == 1 && bad[0] != "" && strings.Contains(r.Err, bad[0]) {
			t.Errorf("error quotes the header value: %s", r.Err)
		}
	}
}

// TestUntrustedAddressIsRefused is the attacker who reaches the gateway
// directly (not through the proxy) and names a user, with a forged
// X-Forwarded-For claiming to be the proxy for good measure.
func TestUntrustedAddressIsRefused(t *testing.T) {
	h := mustNew(t, Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
	}})
	srv := gateway(t, h)
	attacker := clientFrom(t, "127.0.0.2")
	for _, hdr := range []http.Header{
		{"X-Forwarded-User": {"alice"}},
		{"X-Forwarded-User": {"alice"}, "X-Forwarded-For": {"127.0.0.1"}, "X-Real-Ip": {"127.0.0.1"}, "Forwarded": {"for=127.0.0.1"}},
		{"X-Forwarded-User": {""}},
		{"x-forwarded-user": {"alice"}},
	} {
		r := get(t, attacker, srv.URL, hdr)
		if r.OK || !reflect.DeepEqual(r.ID, auth.Identity{}) || !strings.HasPrefix(r.Err, "untrusted: ") || r.Trust {
			t.Errorf("headers %v from 127.0.0.2: %+v, want ErrUntrusted", hdr, r)
		}
	}
	if r := get(t, attacker, srv.URL, nil); r.OK || r.Err != "" {
		t.Errorf("no header from 127.0.0.2: %+v, want not authenticated, no error", r)
	}

	// The same from a configuration that excludes 127.0.0.1 itself.
	srv2 := gateway(t, mustNew(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}))
	if r := get(t, clientFrom(t, "127.0.0.1"), srv2.URL, http.Header{"X-Forwarded-User": {"alice"}}); r.OK || !strings.HasPrefix(r.Err, "untrusted: ") {
		t.Errorf("from 127.0.0.1, proxies 192.0.2.0/24: %+v", r)
	}
}

// TestBehindARealProxy puts a reverse proxy on 127.0.0.1 in front of the
// gateway, as Open OnDemand's Apache would be. The proxy sets the header
// after its own authentication; clients try to add their own.
func TestBehindARealProxy(t *testing.T) {
	h := mustNew(t, Config{Header: "X-Remote-User", TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	backend := gateway(t, h)
	target, _ := url.Parse(backend.URL)
	proxyTransport := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}).DialContext}
	t.Cleanup(proxyTransport.CloseIdleConnections)
	newProxy := func(appendHeader bool) *httptest.Server {
		rp := &httputil.ReverseProxy{
			Transport: proxyTransport,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				user := pr.In.URL.Query().Get("as") // the proxy's "authentication"
				if appendHeader {
					pr.Out.Header.Add("X-Remote-User", user) // a misconfigured proxy
				} else {
					pr.Out.Header.Set("X-Remote-User", user)
				}
			},
		}
		s := httptest.NewServer(rp)
		t.Cleanup(s.Close)
		return s
	}
	client := clientFrom(t, "127.0.0.2")

	good := newProxy(false)
	r := get(t, client, good.URL+"/?as=bob", http.Header{"X-Remote-User": {"alice"}})
	if !r.OK || r.ID.User != "bob" {
		t.Errorf("through a replacing proxy, client sent alice, proxy said bob: %+v", r)
	}
	sloppy := newProxy(true)
	r = get(t, client, sloppy.URL+"/?as=bob", http.Header{"X-Remote-User": {"alice"}})
	if r.OK || !strings.HasPrefix(r.Err, "bad: ") {
		t.Errorf("through an appending proxy with a client-supplied value: %+v, want refused", r)
	}
	r = get(t, client, backend.URL, http.Header{"X-Remote-User": {"alice"}})
	if r.OK || !strings.HasPrefix(r.Err, "untrusted: ") {
		t.Errorf("around the proxy: %+v, want refused", r)
	}
}

func TestMappedAndOddPeers(t *testing.T) {
	h := mustNew(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}})
	for _, tc := range []struct {
		remote string
		ok     bool
	}{
		{"192.0.2.7:443", true},
		{"[::ffff:192.0.2.7]:443", true}, // a dual-stack listener's view
		{"[2001:db8::1]:443", true},
		{"[2001:db9::1]:443", false},
		{"192.0.3.7:443", false},
		{"192.0.2.7", false}, // not ip:port
		{"@", false},         // a UNIX socket peer
		{"", false},
	} {
		req := httptest.NewRequestWithContext(context.Background(), "GET", "/", nil)
		req.RemoteAddr = tc.remote
		req.Header.Set("X-Forwarded-User", "alice")
		_, ok, err := h.FromRequest(req)
		if ok != tc.ok || (err != nil) == tc.ok {
			t.Errorf("RemoteAddr %q: ok=%v err=%v, want ok=%v", tc.remote, ok, err, tc.ok)
		}
	}
}

func TestConfig(t *testing.T) {
	lo := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	for _, bad := range []Config{
		{},
		{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("::/0")}},
		{TrustedProxies: []netip.Prefix{{}}},
		{TrustedProxies: lo, Header: "X Forwarded User"},
		{TrustedProxies: lo, Header: "X-User:"},
		{TrustedProxies: lo, AdminUsers: []string{"Admin"}},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	h := mustNew(t, Config{TrustedProxies: lo, Header: "x-remote-user"})
	if h.name != "X-Remote-User" {
		t.Errorf("header %q not canonicalised", h.name)
	}
	if mustNew(t, Config{TrustedProxies: lo}).name != DefaultHeader {
		t.Error("default header")
	}
}
