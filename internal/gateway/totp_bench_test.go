package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/totp"
	"github.com/airlock-hpc/airlock/internal/session"
)

// BenchmarkLoginTOTP measures, in one run, whole logins per second at 20
// concurrent clients: the local password form alone (baseline, users
// without a second factor) and the password plus a TOTP code (another
// 20 users, enrolled). ns/op against local's is the second factor's added
// latency. A code is accepted once per user and time step, so before each
// code the benchmark moves the user's last used step back (two store
// writes, counted in local+totp: the figure errs high).
func BenchmarkLoginTOTP(b *testing.B) {
	var users []string
	for i := range 20 {
		users = append(users, fmt.Sprintf("p%d", i), fmt.Sprintf("t%d", i))
	}
	cfg := testConfig(b, b.TempDir(), 50*time.Millisecond, 99, users...)
	cfg.Profiles = []Profile{desktopProfile()}
	g, base, cancel, done := serveGateway(b, cfg)
	b.Cleanup(func() { cancel(); <-done; g.Close() })
	tg := &testGateway{t: nil, g: g, url: base}
	ctx := context.Background()
	secrets := map[string]string{}
	for i := range 20 {
		u := fmt.Sprintf("t%d", i)
		if err := cfg.Store.PutUser(ctx, session.User{Name: u, Method: "local", Created: time.Now()}); err != nil {
			b.Fatal(err)
		}
		k, err := totp.Generate("airlock", u)
		if err != nil {
			b.Fatal(err)
		}
		secrets[u] = k.Secret
	}
	enrol := func(u string) error {
		sealed, err := totp.Seal(g.totpKey(), u, secrets[u])
		if err != nil {
			return err
		}
		if err := cfg.Store.DeleteTOTP(ctx, u); err != nil {
			return err
		}
		return cfg.Store.EnrolTOTP(ctx, session.TOTP{User: u, Secret: sealed, LastStep: totp.Step(time.Now()) - 2, Created: time.Now()}, nil)
	}
	post := func(c *client, path string, v url.Values) (*http.Response, error) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := c.http.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	for _, m := range []struct {
		name   string
		prefix string
		totp   bool
	}{{"local", "p", false}, {"local+totp", "t", true}} {
		b.Run(m.name, func(b *testing.B) {
			var next atomic.Int32
			b.SetParallelism(10) // 10 × GOMAXPROCS (2 here) = 20 clients
			b.RunParallel(func(pb *testing.PB) {
				u := fmt.Sprintf("%s%d", m.prefix, next.Add(1)-1)
				for pb.Next() {
					c := tg.client()
					c.t = b
					if m.totp {
						if err := enrol(u); err != nil {
							b.Error(err)
							return
						}
					}
					resp, err := post(c, "/login", url.Values{"user": {u}, "password": {testPassword}})
					if err != nil {
						b.Error(err)
						return
					}
					if m.totp {
						code, _ := totp.Code(secrets[u], totp.Step(time.Now()))
						if resp, err = post(c, "/login/totp", url.Values{"code": {code}}); err != nil {
							b.Error(err)
							return
						}
					}
					if !hasLoginCookie(resp) {
						b.Errorf("%s login %s: %d", m.name, u, resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
