package gateway

import (
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/session"
)

// TestSealedAppCookie: a sealed cookie opens to the grant it was made
// from, under the same master key only, and not as a code's handoff.
func TestSealedAppCookie(t *testing.T) {
	g := &Gateway{master: []byte("0123456789abcdef0123456789abcdef")}
	gr := appGrant{viewerTag: viewerTag{Session: "s-0123456789ab", Owner: "alice", User: "bob", Share: "sh1", Mode: session.View,
		Expires: time.Unix(2e9, 0).UTC(), proof: []byte{1, 2}, shareHash: []byte{3}}, connector: "app", created: time.Unix(1e9, 0).UTC()}
	v, err := g.sealAppCookie(gr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.openAppCookie(v)
	if err != nil {
		t.Fatal(err)
	}
	if wireOf(got).Session != gr.Session || got.User != "bob" || got.Mode != session.View || string(got.shareHash) != "\x03" || got.connector != "app" || !got.Expires.Equal(gr.Expires) {
		t.Fatalf("opened %+v", got)
	}
	other := &Gateway{master: []byte("another master key, 32 bytes...")}
	if _, err := other.openAppCookie(v); err == nil {
		t.Fatal("opened under another master key")
	}
	b, _ := g.sealGrant("app code", gr)
	if _, err := g.openGrant("app cookie", b); err == nil {
		t.Fatal("a code's sealed grant opened as a cookie")
	}
}

// FuzzOpenAppCookie: any cookie value is refused or opened, never a panic,
// and only a value sealed under the key opens.
func FuzzOpenAppCookie(f *testing.F) {
	g := &Gateway{master: []byte("0123456789abcdef0123456789abcdef")}
	seed, _ := g.sealAppCookie(appGrant{viewerTag: viewerTag{Session: "s-0123456789ab", User: "alice"}, connector: "app"})
	f.Add(seed)
	f.Add(sealedCookiePrefix)
	f.Add(sealedCookiePrefix + "YWlybG9jay1zZWFsZWQtdjE6")
	f.Add("plain")
	f.Fuzz(func(t *testing.T, value string) {
		gr, err := g.openAppCookie(value)
		if err == nil && (gr.Session != "s-0123456789ab" || gr.User != "alice" || gr.connector != "app") {
			// Only what this key sealed opens (the seed, made afresh in
			// each fuzzing process), and to what was sealed.
			t.Fatalf("%q opened to %+v", value, gr)
		}
	})
}
