package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/oidc"
	"github.com/airlock-hpc/airlock/internal/mailer"
	"github.com/airlock-hpc/airlock/internal/realtest/oidcop"
	"github.com/airlock-hpc/airlock/internal/realtest/smtpsink"
)

// BenchmarkLoginMethods measures, in one run, whole browser logins per
// second at 20 concurrent clients through the gateway: the local password
// form (the baseline), an OpenID provider's code flow (the gateway, the
// provider's form, the token exchange, userinfo) and an e-mailed link
// (asking, the mail through a real SMTP sink, opening the link). ns/op
// against local's is each method's added latency. (IMAP and SMTP AUTH:
// internal/auth/mail's BenchmarkLogins.)
func BenchmarkLoginMethods(b *testing.B) {
	op := oidcop.Start(b, oidcop.User{ID: "sub-alice", Name: "alice", Password: opPassword, Groups: []string{"hpc"}})
	p, err := oidc.New(oidc.Config{Name: "idp", Issuer: op.Issuer, ClientID: "airlock", ClientSecret: "client-s3cret"})
	if err != nil {
		b.Fatal(err)
	}
	sink := smtpsink.Start(b)
	m, err := mailer.New(mailer.Config{URL: sink.URL, RootCAs: sink.CAFile, From: "airlock <airlock@gw.test>"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b, b.TempDir(), 50*time.Millisecond, 99, "alice")
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.OIDC, cfg.Mailer = []*oidc.Provider{p}, m
	cfg.EmailLogin = &EmailLogin{Domains: []string{"example.org"}, PerAddress: 1 << 20, PerClient: 1 << 20}
	// Listening first: e-mailed links name the gateway's public address,
	// which must be known before it starts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	base := "https://" + ln.Addr().String()
	cfg.PublicURL = base
	g, err := New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done; g.Close() })
	op.AddClient("airlock", "client-s3cret", []string{base + "/auth/oidc/idp/callback"}, nil)
	tg := &testGateway{t: nil, g: g, url: base}

	// Links by recipient: each login asks for its own address.
	var links sync.Map // address → chan string
	stop := make(chan struct{})
	routed := make(chan struct{})
	go func() {
		defer close(routed)
		for {
			select {
			case <-stop:
				return
			case msg := <-sink.Got:
				if ch, ok := links.Load(msg.To[0]); ok {
					ch.(chan string) <- linkRE.FindString(msg.Data)
				}
			}
		}
	}()
	defer func() { close(stop); <-routed }()
	newClient := func() *client {
		c := tg.client()
		c.t = b
		return c
	}
	var n atomic.Int64
	methods := []struct {
		name  string
		login func() error
	}{
		{"local", func() error {
			c := newClient()
			req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"user": {"alice"}, "password": {testPassword}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			resp, err := c.http.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if !hasLoginCookie(resp) {
				return fmt.Errorf("local login: %d", resp.StatusCode)
			}
			return nil
		}},
		{"oidc", func() error {
			c := newClient()
			cb := oidcop.LogIn(b, c.http, base+"/auth/oidc/idp/login", "alice", opPassword)
			resp, err := c.http.Get(cb.String())
			if err != nil {
				return err
			}
			resp.Body.Close()
			if !hasLoginCookie(resp) {
				return fmt.Errorf("oidc login: %d", resp.StatusCode)
			}
			return nil
		}},
		{"email", func() error {
			c := newClient()
			addr := fmt.Sprintf("u%d@example.org", n.Add(1))
			ch := make(chan string, 1)
			links.Store(addr, ch)
			defer links.Delete(addr)
			req, _ := http.NewRequest("POST", base+"/login/email", strings.NewReader(url.Values{"email": {addr}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			resp, err := c.http.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			var link string
			select {
			case link = <-ch:
			case <-time.After(30 * time.Second):
				return fmt.Errorf("no link for %s", addr)
			}
			resp, err = c.http.Get(link)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if !hasLoginCookie(resp) {
				return fmt.Errorf("email login: %d", resp.StatusCode)
			}
			return nil
		}},
	}
	for _, m := range methods {
		b.Run(m.name, func(b *testing.B) {
			b.SetParallelism(10) // 10 × GOMAXPROCS (2 here) = 20 clients
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := m.login(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
