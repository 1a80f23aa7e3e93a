package gateway

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestProxyBuffersNotShared: the reverse proxy's copy buffers come from a
// pool (relay.ProxyBuffers); answers of different sizes, many at once through
// a forward, each arrive whole and as the app wrote them, so no buffer is
// handed to two copies at once or returned while still in use.
func TestProxyBuffersNotShared(t *testing.T) {
	tg := startGateway(t, "", nil, "alice")
	body := func(n int) []byte {
		r := rand.New(rand.NewPCG(uint64(n), 13))
		b := make([]byte, n*7919%(300<<10)+1)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	target := goApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, "not a number", 400)
			return
		}
		w.Write(body(n))
	}))
	f := serveForward(t, tg, tg.client().loginToken("alice").token, "pool", target)
	alice := tg.client().loginCookie("alice").reachApps()
	if resp, _ := alice.visit(f.URL + "0"); resp.StatusCode != 200 {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	alice.http.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	// Its keep-alive connections end with the test, not whenever the
	// gateway's shutdown reaches them (the leak check runs after).
	t.Cleanup(alice.http.CloseIdleConnections)
	var wg sync.WaitGroup
	errs := make(chan error, 16*8)
	for w := range 16 {
		wg.Go(func() {
			for i := range 8 {
				n := w*8 + i + 1
				resp, err := alice.http.Get(f.URL + strconv.Itoa(n))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("GET /%d: %d %v", n, resp.StatusCode, err)
					return
				}
				if !bytes.Equal(got, body(n)) {
					errs <- fmt.Errorf("GET /%d: %d bytes, not what the app wrote (%d bytes)", n, len(got), len(body(n)))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
