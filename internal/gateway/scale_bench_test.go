package gateway

import (
	"fmt"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/store/storetest"
)

// measureLaunch launches profile n times through the API and returns the
// time from the POST to Ready of each; each session is stopped (not
// timed) before the next launch.
func measureLaunch(bg *benchGateway, profile string, n int) (latencies, error) {
	var l latencies
	for range n {
		id, d, err := bg.launch(profile)
		if err != nil {
			return l, err
		}
		l = append(l, d)
		if err := bg.stop(id); err != nil {
			return l, err
		}
	}
	return l, nil
}

// BenchmarkLaunchLatency: from the API call that launches a session to the
// gateway's store saying it is ready, for the app profile (the probe) and
// the demo desktop (Xvnc 1280x800 and an xterm). The local backend polls
// its runners' events at its production default, 200 ms, which is part of
// what a user waits for.
func BenchmarkLaunchLatency(b *testing.B) {
	bg := startBenchGateway(b, 0)
	for _, profile := range []string{"bench", "desktop"} {
		b.Run(profile, func(b *testing.B) {
			if profile == "desktop" {
				if _, err := exec.LookPath("Xvnc"); err != nil {
					b.Skip("Xvnc not installed")
				}
			}
			var all latencies
			for b.Loop() {
				id, d, err := bg.launch(profile)
				if err != nil {
					b.Fatal(err)
				}
				all = append(all, d)
				b.StopTimer() // the stop is not part of a launch
				if err := bg.stop(id); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			reportLatency(b, all, "ms")
		})
	}
}

// listEnv is a gateway whose store holds sessions sessions of 1,000
// owners (storetest.Seed: one in ten Ready), with tokens for one owner and
// for an admin.
type listEnv struct {
	bg                *benchGateway
	userTok, adminTok string
}

func newListEnv(tb testing.TB, sessions int) *listEnv {
	bg := startBenchGateway(tb, 0)
	owners := storetest.Seed(tb, bg.store, sessions, 1000)
	return &listEnv{bg: bg, userTok: bg.newToken(owners[0], false), adminTok: bg.newToken("admin", true)}
}

// listPaths are the session lists timed: one user's own sessions (the
// portal's home page), and the admin view (its first 1,000).
var listPaths = []struct{ name, path string }{
	{"user", "/api/v1/sessions"},
	{"admin", "/api/v1/admin/sessions"},
}

// get sends one GET of path with token and reads the answer.
func (e *listEnv) get(path, token string) error {
	req, _ := http.NewRequest("GET", e.bg.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return getOnce(e.bg.http, req)
}

func (e *listEnv) tokenFor(name string) string {
	if name == "admin" {
		return e.adminTok
	}
	return e.userTok
}

// measureList times n GETs of path, one after another.
func (e *listEnv) measureList(name, path string, n int) (latencies, error) {
	tok := e.tokenFor(name)
	l := make(latencies, 0, n)
	for range n {
		t0 := time.Now()
		if err := e.get(path, tok); err != nil {
			return l, fmt.Errorf("%s: %w", path, err)
		}
		l = append(l, time.Since(t0))
	}
	return l, nil
}

// BenchmarkSessionList10k: the session list with 10,000 sessions in the
// store, through the gateway (HTTPS, token check, JSON), one request at a
// time; p50/p99 in ms. The target is a p99 of 20 ms.
func BenchmarkSessionList10k(b *testing.B) {
	e := newListEnv(b, 10_000)
	for _, lp := range listPaths {
		b.Run(lp.name, func(b *testing.B) {
			tok := e.tokenFor(lp.name)
			lat := make(latencies, 0, 1024)
			b.ReportAllocs()
			cpu0 := selfCPU()
			for b.Loop() {
				t0 := time.Now()
				if err := e.get(lp.path, tok); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.ReportMetric(float64(selfCPU()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
			reportLatency(b, lat, "ms")
		})
	}
}

// selfCPU is the user and system CPU time this process has used: on a
// shared machine, wall time says how busy the machine was, CPU time what
// the code costs.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
