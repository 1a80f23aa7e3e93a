package gateway

import (
	"net/http/httptest"
	"testing"
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
