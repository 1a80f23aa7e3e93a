package registration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func setEnv(t *testing.T, url, sha, token string) {
	t.Setenv(EnvURL, url)
	t.Setenv(EnvSHA256, sha)
	t.Setenv(EnvToken, token)
}

// TestFromEnv: the client takes its settings from the environment and
// removes them from it; a plain-HTTP URL or a missing token is refused.
func TestFromEnv(t *testing.T) {
	setEnv(t, "https://gw:8443/", "", "tok")
	c, err := FromEnv("s-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "https://gw:8443" || c.Token != "tok" {
		t.Fatalf("%+v", c)
	}
	for _, k := range []string{EnvURL, EnvToken, EnvSHA256} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still in the environment", k)
		}
	}
	setEnv(t, "http://gw:8443", "", "tok")
	if _, err := FromEnv("s-1"); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("plain http: %v", err)
	}
	setEnv(t, "https://gw", "", "")
	if _, err := FromEnv("s-1"); err == nil || !strings.Contains(err.Error(), EnvToken) {
		t.Errorf("no token: %v", err)
	}
}

// TestSend: the body and token reach the gateway; 5xx answers are retried,
// a 4xx is final; a gateway whose certificate is not the pinned one gets
// nothing.
func TestSend(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path != "/api/v1/register/s-1" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		switch {
		case n == 1:
			http.Error(w, "restarting", http.StatusServiceUnavailable)
		case strings.Contains(r.Header.Get("Content-Type"), "json") && n == 2:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":{"code":"already_registered","message":"session is ready"}}`))
		}
	}))
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	setEnv(t, srv.URL, hex.EncodeToString(sum[:]), "tok")
	c, err := FromEnv("s-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Send(ctx, Registration{Event: "ready", Ports: map[string]int{"console": 1}}); err != nil {
		t.Fatalf("send after one 503: %v", err)
	}
	err = c.Send(ctx, Registration{Event: "ready"})
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Status != 409 || refused.Message != "session is ready" {
		t.Fatalf("replay: %v", err)
	}

	setEnv(t, srv.URL, strings.Repeat("0", 64), "tok")
	c, _ = FromEnv("s-1")
	before := calls.Load()
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if err := c.Send(short, Registration{Event: "exit"}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong pin: %v", err)
	}
	if calls.Load() != before {
		t.Fatal("a request reached a gateway with the wrong certificate")
	}
}
