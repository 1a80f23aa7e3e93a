package ticket

import (
	"errors"
	"testing"
	"time"
)

// TestReplayRelease: a released nonce may be used again (the use it stood
// for did not happen); others stay used.
func TestReplayRelease(t *testing.T) {
	var g ReplayGuard
	now := time.Now()
	a := Claims{Nonce: "a", Expires: now.Add(time.Minute)}
	b := Claims{Nonce: "b", Expires: now.Add(time.Minute)}
	for _, c := range []Claims{a, b} {
		if err := g.Use(c, now); err != nil {
			t.Fatal(err)
		}
	}
	g.Release(a)
	if err := g.Use(a, now); err != nil {
		t.Errorf("a released nonce: %v", err)
	}
	if err := g.Use(b, now); !errors.Is(err, ErrReplayed) {
		t.Errorf("another nonce after a release: %v, want ErrReplayed", err)
	}
}
