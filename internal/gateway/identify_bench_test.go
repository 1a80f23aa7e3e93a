package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// BenchmarkIdentifyBearer: who a request with a bearer token is, the first
// step of every API and proxied request from a script, on one goroutine and
// on all of them at once.
func BenchmarkIdentifyBearer(b *testing.B) {
	bg := startBenchGateway(b, 0)
	req := httptest.NewRequest("GET", "/api/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+bg.token)
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := bg.g.identify(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			r := req.Clone(req.Context())
			for pb.Next() {
				if _, err := bg.g.identify(r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkIdentifyCookie: who a browser's request is: the login looked up
// in the store, then the user's standing (the user record and the password
// file), every request, so a logout or a removal holds at once.
func BenchmarkIdentifyCookie(b *testing.B) {
	bg := startBenchGateway(b, 0)
	secret, sum := newSecret()
	if err := bg.store.CreateLogin(b.Context(), session.Login{ID: "l-bench", User: benchUser, Expires: time.Now().Add(time.Hour), Hash: sum}); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/api/v1/me", nil)
	req.AddCookie(&http.Cookie{Name: loginCookie, Value: secret})
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := bg.g.identify(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			r := req.Clone(req.Context())
			for pb.Next() {
				if _, err := bg.g.identify(r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
