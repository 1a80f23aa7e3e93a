package gateway

import (
	"strings"
	"testing"
)

// FuzzForwardLabel: a forward's host label is a DNS label, never a
// session ID, and splits back into its name and user one way only, so no
// user's label is another user's.
func FuzzForwardLabel(f *testing.F) {
	for _, s := range [][2]string{{"web", "alice"}, {"s", "0123456789ab"}, {"web-alice", "bob"}, {"x", "a-b"}, {"", "alice"}, {"Web", "alice"}, {"web", "Alice"}, {"web", "-a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, user string) {
		label, err := forwardLabel(name, user)
		if err != nil {
			return
		}
		if len(label) > 63 || validSessionID(label) || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			t.Fatalf("label %q of (%q, %q)", label, name, user)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				t.Fatalf("label %q of (%q, %q): %q is not a DNS label character", label, name, user, c)
			}
		}
		n, u, _ := strings.Cut(label, "-")
		if n != name || u != user {
			t.Fatalf("label %q of (%q, %q) splits into (%q, %q)", label, name, user, n, u)
		}
	})
}
