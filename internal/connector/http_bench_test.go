package connector

import (
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// BenchmarkHTTPConnector: small GETs through the http connector to an app
// on a UNIX socket from 100 keep-alive clients, each request let in by the
// connector's cookie (what the gateway sends after one ticket, issue 18)
// or by a fresh ticket of its own (what the gateway sent before). It
// reports requests per second; -cpuprofile shows the connector's own cost.
//
//	go test -run '^$' -bench BenchmarkHTTPConnector -benchtime 20000x ./internal/connector/
func BenchmarkHTTPConnector(b *testing.B) {
	app := startApp(b, true)
	k := newKey(b)
	addr, _ := startConnector(b, Config{Kind: KindHTTP, Target: app.target, Key: k, Logger: slog.New(slog.DiscardHandler)})
	u := "http://" + addr + "/x"
	for _, by := range []string{"cookie", "ticket"} {
		b.Run(by, func(b *testing.B) {
			const clients = 100
			tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			var cookie string
			if by == "cookie" {
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Authorization", "Bearer "+mint(b, k, ticket.Control))
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				for _, ck := range resp.Cookies() {
					cookie = ck.Name + "=" + ck.Value
				}
				if cookie == "" {
					b.Fatal("no cookie for the ticket")
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						req, _ := http.NewRequest("GET", u, nil)
						if cookie != "" {
							req.Header.Set("Cookie", cookie)
						} else {
							req.Header.Set("Authorization", "Bearer "+mint(b, k, ticket.Control))
						}
						resp, err := c.Do(req)
						if err != nil {
							failed.Store(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							failed.Store(resp.Status)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f != nil {
				b.Fatal(f)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
		})
	}
}
