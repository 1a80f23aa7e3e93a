package mail_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/local"
)

// BenchmarkLogins measures, in one run, password logins per second at 20
// concurrent clients against the local password file (the baseline),
// Dovecot over IMAP (implicit TLS and STARTTLS) and Exim over SMTP AUTH
// (STARTTLS). ns/op divided into the baseline's is each method's added
// latency; every login is a new connection and TLS handshake, as the
// gateway makes them.
func BenchmarkLogins(b *testing.B) {
	dir := b.TempDir()
	f, err := local.Open(filepath.Join(dir, "passwd"))
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Add("alice", []byte("alice-mail-pw"), false); err != nil {
		b.Fatal(err)
	}
	methods := []struct {
		name string
		a    auth.PasswordAuthenticator
	}{{"local", f}}
	starttls, implicit, ca := startDovecot(b)
	addr, eca := startExim(b)
	methods = append(methods,
		struct {
			name string
			a    auth.PasswordAuthenticator
		}{"imaps", server(b, "imaps://"+implicit, ca, 0)},
		struct {
			name string
			a    auth.PasswordAuthenticator
		}{"imap-starttls", server(b, "imap://"+starttls, ca, 0)},
		struct {
			name string
			a    auth.PasswordAuthenticator
		}{"smtp-starttls", server(b, "smtp://"+addr, eca, 0)})
	for _, m := range methods {
		b.Run(m.name, func(b *testing.B) {
			b.SetParallelism(20)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := m.a.Authenticate(context.Background(), "alice", "alice-mail-pw"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
