package oidc_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/oidc"
)

// FuzzClaims feeds the claim parsers what a provider may send: a groups
// claim of any JSON shape and any login with any domain rule.
func FuzzClaims(f *testing.F) {
	f.Add(`["a","b"]`, "alice@example.org", "example.org")
	f.Add(`"one"`, "Alice", "")
	f.Add(`[1,{"x":2}]`, "a@b@example.org", "@example.org")
	f.Fuzz(func(t *testing.T, groupsJSON, login, domain string) {
		var v any
		if json.Unmarshal([]byte(groupsJSON), &v) == nil {
			if gs, err := oidc.Groups(v); err == nil {
				if len(gs) > oidc.MaxGroups {
					t.Fatalf("%d groups", len(gs))
				}
				for i, g := range gs {
					if g == "" || strings.ContainsAny(g, "\n\r\x00") || (i > 0 && gs[i-1] >= g) {
						t.Fatalf("groups %q: empty, multi-line, unsorted or repeated", gs)
					}
				}
			}
		}
		if u, err := oidc.MapUser(login, domain); err == nil {
			if auth.ValidateUserName(u) != nil {
				t.Fatalf("MapUser(%q, %q) = %q, not a valid user name", login, domain, u)
			}
			if domain != "" && !strings.HasSuffix(strings.ToLower(login), "@"+strings.ToLower(strings.TrimPrefix(domain, "@"))) {
				t.Fatalf("MapUser(%q, %q) = %q outside the domain", login, domain, u)
			}
		}
	})
}
