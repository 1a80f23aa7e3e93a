package mail_test

import (
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/mail"
)

// FuzzMapLogin: whatever is typed, a mapped name is a valid user name
// that the login template turns back into what was typed.
func FuzzMapLogin(f *testing.F) {
	f.Add("{user}@example.org", "alice@example.org")
	f.Add("mail-{user}", "MAIL-bob")
	f.Add("{user}@example.org", "@example.org")
	f.Fuzz(func(t *testing.T, tmpl, login string) {
		if !strings.Contains(tmpl, "{user}") {
			return
		}
		s, err := mail.New(mail.Config{URL: "imaps://mail.example", Login: tmpl})
		if err != nil {
			return
		}
		u, ok := s.MapLogin(login)
		if !ok {
			return
		}
		if auth.ValidateUserName(u) != nil {
			t.Fatalf("MapLogin(%q) with %q = %q, not a valid user name", login, tmpl, u)
		}
		pre, post, _ := strings.Cut(strings.ToLower(tmpl), "{user}")
		if pre+u+post != strings.ToLower(login) {
			t.Fatalf("MapLogin(%q) with %q = %q, which the template does not turn back into the login", login, tmpl, u)
		}
	})
}
