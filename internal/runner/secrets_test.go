package runner

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsPerKind: each connector is handed what its kind needs and no
// more: the ticket key only to kinds that check tickets, the client CA
// only to kinds that check client certificates, a session VNC password
// only to the connector that asked for one.
func TestSecretsPerKind(t *testing.T) {
	dir := t.TempDir()
	cert, key, _, err := selfSigned("s-1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := &Spec{ID: "s-1", TicketKeyFile: write("ticket.key", []byte("0123456789abcdef0123456789abcdef")),
		TLS: &TLSFiles{CertFile: write("c.pem", cert), KeyFile: write("k.pem", key), ClientCAFile: write("ca.pem", cert)},
		Connectors: []ConnectorSpec{
			{Name: "console", Kind: "vnc", Target: "127.0.0.1:5901", Listen: "tcp:127.0.0.1:0", SessionVNCPasswordFile: "/tmp/pw"},
			{Name: "app", Kind: "http", Target: "127.0.0.1:8888", Listen: "unix:/run/x/app.sock"},
			{Name: "rdp", Kind: "tls", Target: "127.0.0.1:3389", Listen: "tcp:0.0.0.0:0"},
		}}
	r := &run{spec: spec, log: slog.New(slog.DiscardHandler)}
	sec, _, err := r.loadSecrets()
	if err != nil {
		t.Fatal(err)
	}
	if c := sec["console"]; c.TicketKey == "" || c.ClientCAPEM != "" || c.CertPEM == "" || len(c.VNCPassword) != 8 {
		t.Errorf("vnc connector got ticket key %t, client CA %t, certificate %t, password %q", c.TicketKey != "", c.ClientCAPEM != "", c.CertPEM != "", c.VNCPassword)
	}
	if c := sec["app"]; c.TicketKey == "" || c.ClientCAPEM != "" || c.CertPEM != "" || c.VNCPassword != "" {
		t.Errorf("http connector on a UNIX socket got ticket key %t, client CA %t, certificate %t, password %t", c.TicketKey != "", c.ClientCAPEM != "", c.CertPEM != "", c.VNCPassword != "")
	}
	if c := sec["rdp"]; c.TicketKey != "" || c.ClientCAPEM == "" || c.CertPEM == "" || c.VNCPassword != "" {
		t.Errorf("tls connector got ticket key %t, client CA %t, certificate %t, password %t", c.TicketKey != "", c.ClientCAPEM != "", c.CertPEM != "", c.VNCPassword != "")
	}
	again, _, _ := r.loadSecrets()
	if again["console"].VNCPassword == sec["console"].VNCPassword {
		t.Error("two sessions got the same VNC password")
	}
}

// TestRNodeSecret: an rnode connector gets the secret from secret_env, and
// nothing else (no ticket key, no certificate: it speaks plain HTTP); the
// variable is gone from the runner's environment, so nothing it starts
// inherits it; a short secret is refused naming the variable, never
// showing the value.
func TestRNodeSecret(t *testing.T) {
	const secret = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
	spec := &Spec{ID: "s-1", TicketKeyEnv: "TEST_TICKET_KEY", Connectors: []ConnectorSpec{
		{Name: "ood", Kind: "rnode", Target: "127.0.0.1:6080", Listen: "tcp:0.0.0.0:0", SecretEnv: "TEST_OOD_SECRET"},
		{Name: "app", Kind: "http", Target: "127.0.0.1:8888", Listen: "unix:/run/x/app.sock"},
	}}
	t.Setenv("TEST_TICKET_KEY", "0123456789abcdef0123456789abcdef")
	t.Setenv("TEST_OOD_SECRET", secret)
	r := &run{spec: spec, log: slog.New(slog.DiscardHandler)}
	sec, sha, err := r.loadSecrets()
	if err != nil {
		t.Fatal(err)
	}
	if c := sec["ood"]; c.Secret != secret || c.TicketKey != "" || c.CertPEM != "" || sha != "" {
		t.Errorf("rnode connector got secret %t, ticket key %t, certificate %t (sha %q)", c.Secret == secret, c.TicketKey != "", c.CertPEM != "", sha)
	}
	if sec["app"].Secret != "" {
		t.Error("the http connector got the rnode secret")
	}
	if _, ok := os.LookupEnv("TEST_OOD_SECRET"); ok {
		t.Error("TEST_OOD_SECRET is still in the runner's environment")
	}
	t.Setenv("TEST_TICKET_KEY", "0123456789abcdef0123456789abcdef")
	t.Setenv("TEST_OOD_SECRET", "short-one")
	_, _, err = r.loadSecrets()
	if err == nil || !strings.Contains(err.Error(), "$TEST_OOD_SECRET: 9 characters, want at least 32") || strings.Contains(err.Error(), "short-one") {
		t.Errorf("short secret: %v", err)
	}
}
