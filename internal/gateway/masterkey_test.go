package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
)

// TestMasterKeyFileRefusals: a master key file other users may read, one
// of the wrong size, or one that is missing stops the gateway with the
// key's name and the reason; a good one (raw or hex) is the key.
func TestMasterKeyFileRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file, want string
	}{
		{"readable by others", write("open.key", key, 0o644), "mode 0644 lets other users read it"},
		{"group-readable", write("group.key", key, 0o640), "mode 0640 lets other users read it"},
		{"short", write("short.key", key[:16], 0o600), "want 32 bytes or 64 hexadecimal digits, have 16 bytes"},
		{"not hex", write("nothex.key", []byte(strings.Repeat("zz", 32)+"\n"), 0o600), "have 65 bytes"},
		{"missing", filepath.Join(dir, "none.key"), "no such file"},
		{"a directory", dir, "not a regular file"},
	} {
		cfg := testConfig(t, t.TempDir(), time.Second, slog.LevelError)
		cfg.Profiles = []Profile{desktopProfile()}
		cfg.MasterKeyFile = c.file
		_, err := New(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "store.master_key_file") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error naming store.master_key_file and %q", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		body []byte
	}{{"raw", key}, {"hex", []byte(hex.EncodeToString(key) + "\n")}} {
		state := t.TempDir()
		cfg := testConfig(t, state, time.Second, slog.LevelError)
		cfg.Profiles = []Profile{desktopProfile()}
		cfg.MasterKeyFile = write(c.name+".key", c.body, 0o400)
		g, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(g.master, key) {
			t.Errorf("%s: the gateway's key is not the file's", c.name)
		}
		if _, err := os.Stat(filepath.Join(state, "master.key")); err == nil {
			t.Errorf("%s: a master.key was made in the state directory beside the file", c.name)
		}
		g.Close()
	}
}

// TestMasterKeyFileKeepsTheKeyOutOfPostgres: two gateways on one
// PostgreSQL, each given the same master key file. The database never
// holds the key; what it shares between them (the self-signed
// certificate and its private key) is sealed under the key, so a copy of
// the database holds no private key in clear, yet both gateways serve
// the same certificate. A third gateway given another key, and a fourth
// given none, refuse to start instead of minting tickets the others
// would refuse.
func TestMasterKeyFileKeepsTheKeyOutOfPostgres(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	keyDir := t.TempDir()
	keyFile := func(name string) string {
		k := make([]byte, 32)
		rand.Read(k)
		p := filepath.Join(keyDir, name)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	site := keyFile("site.key")
	onPG := func(file string) Config { return keyFileConfig(t, dsn, file) }
	start := func(cfg Config) (*Gateway, string) {
		g, url, cancel, done := serveGateway(t, cfg)
		t.Cleanup(func() { cancel(); <-done; g.Close() })
		return g, url
	}
	a, urlA := start(onPG(site))
	b, urlB := start(onPG(site))
	if !bytes.Equal(a.master, b.master) {
		t.Fatal("two gateways given one master key file hold different keys")
	}
	peer := func(url string) []byte {
		c, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	if !bytes.Equal(peer(urlA), peer(urlB)) {
		t.Error("the two gateways serve different self-signed certificates: the sealed share did not reach the second")
	}

	db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	probe := []byte("probe: absent")
	if v, err := db.SharedSecret(t.Context(), "master.key", probe); err != nil || string(v) != keptInFile {
		t.Errorf("the database's master key row holds %q (%v); with master_key_file only the placeholder", v, err)
	}
	v, err := db.SharedSecret(t.Context(), "tls", probe)
	if err != nil || !bytes.HasPrefix(v, []byte(sealedPrefix)) || bytes.Contains(v, []byte("PRIVATE KEY")) {
		t.Errorf("the shared certificate is not sealed in the database: %.60q, %v", v, err)
	}

	other := onPG(keyFile("other.key"))
	if _, err := New(context.Background(), other); err == nil || !strings.Contains(err.Error(), "is not the key the site's other gateways use") {
		t.Errorf("a gateway with another key file: New = %v", err)
	}
	none := onPG("")
	if _, err := New(context.Background(), none); err == nil || !strings.Contains(err.Error(), "give this gateway the same file") {
		t.Errorf("a gateway with no key file: New = %v", err)
	}
	if v, _ := db.SharedSecret(t.Context(), "master.key", probe); string(v) != keptInFile {
		t.Errorf("the gateway with no key file put %q in the database", v)
	}
}

// TestMasterKeyFileOverAKeyInTheDatabase: a site whose gateways shared
// their key through PostgreSQL, moving to master_key_file: the gateway
// refuses to start while the database still holds the old key (the
// point of the file is that it does not), and says how to move.
func TestMasterKeyFileOverAKeyInTheDatabase(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	onPG := func(file string) Config { return keyFileConfig(t, dsn, file) }
	old, err := New(context.Background(), onPG(""))
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	file := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(file, old.master, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), onPG(file))
	if err == nil || !strings.Contains(err.Error(), "still holds the master key") || !strings.Contains(err.Error(), "DELETE FROM secrets") {
		t.Fatalf("master_key_file over a key in the database: New = %v", err)
	}
}

// FuzzOpenSecret: whatever the database holds under a shared secret's
// name, opening it never panics, and a value sealed under one key opens
// only under that key and that name.
func FuzzOpenSecret(f *testing.F) {
	key := make([]byte, 32)
	f.Add([]byte(sealedPrefix + "short"))
	f.Add(sealSecret(key, "tls", []byte(`{"tls.crt":"eA=="}`)))
	f.Add([]byte(`{"master.key":"AAAA"}`))
	f.Fuzz(func(t *testing.T, stored []byte) {
		openSecret(key, "tls", stored)
		openSecret(nil, "tls", stored)
		s := sealSecret(key, "tls", stored)
		if got, err := openSecret(key, "tls", s); err != nil || !bytes.Equal(got, stored) {
			t.Fatalf("round trip: %q, %v", got, err)
		}
		if _, err := openSecret(key, "rdp-client-ca", s); err == nil {
			t.Fatal("a value sealed under one name opened under another")
		}
	})
}

// keyFileConfig is a gateway's config on the PostgreSQL database dsn with
// the master key file file ("" for none).
func keyFileConfig(t *testing.T, dsn, file string) Config {
	cfg := testConfig(t, t.TempDir(), time.Second, slog.LevelWarn)
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.Store.Close()
	db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg.Store = db
	cfg.MasterKeyFile = file
	return cfg
}

// TestMasterKeyFileRefusesAClearRowSwappedIn attacks the database with
// write access but no master key file: it replaces the sealed "tls" row
// with one in clear holding a key pair of its own. A gateway joining the
// site (a fresh state directory) must not take it: it would serve the
// attacker's certificate, whose key the attacker holds (the same for the
// RDP client CA: certificates of the attacker's minting). It refuses to
// start and names the row.
func TestMasterKeyFileRefusesAClearRowSwappedIn(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	site := filepath.Join(t.TempDir(), "site.key")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(site, k, 0o600); err != nil {
		t.Fatal(err)
	}
	onPG := func() Config { return keyFileConfig(t, dsn, site) }
	first, err := New(context.Background(), onPG())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()

	// The attacker's own self-signed pair, made the way a gateway makes
	// one, in a directory of the attacker's.
	cfg := onPG()
	mine := t.TempDir()
	if _, err := loadOrMakeTLS("", "", mine, "apps.localhost"); err != nil {
		t.Fatal(err)
	}
	crt, _ := os.ReadFile(filepath.Join(mine, "tls.crt"))
	key, _ := os.ReadFile(filepath.Join(mine, "tls.key"))
	clear, _ := json.Marshal(map[string][]byte{"tls.crt": crt, "tls.key": key})
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if res, err := raw.Exec("UPDATE secrets SET value = $1 WHERE name = 'tls'", clear); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("the attacker's UPDATE changed %d rows", n)
	}

	g, err := New(context.Background(), cfg)
	if err == nil {
		defer g.Close()
		served, _ := os.ReadFile(filepath.Join(cfg.StateDir, "tls.crt"))
		if bytes.Equal(served, crt) {
			t.Fatal("a gateway with store.master_key_file took a TLS key swapped into the database in clear")
		}
		t.Fatal("a gateway started over a clear row swapped into the database")
	}
	if !strings.Contains(err.Error(), "tls") || !strings.Contains(err.Error(), "not sealed") {
		t.Errorf("New = %v, want a refusal naming the row and saying it is not sealed", err)
	}
}

// TestMasterKeyFileOwnedByAnotherUser attacks as another local user who
// owns the master key file (an admin's chown slip, or a file left in a
// user's directory): mode 0600 keeps others out, not its owner, who
// writes a key of their choosing and then mints tickets and login
// cookies for every user. A gateway (here root) refuses a file that is
// not its own account's or root's, and says whose it is.
func TestMasterKeyFileOwnedByAnotherUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	other := realtest.TestUser(t)
	p := filepath.Join(t.TempDir(), "master.key")
	chosen := bytes.Repeat([]byte{0x41}, 32) // the other user's key
	if err := os.WriteFile(p, chosen, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, other.UID, other.GID); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, t.TempDir(), time.Second, slog.LevelError)
	cfg.Profiles = []Profile{desktopProfile()}
	cfg.MasterKeyFile = p
	g, err := New(context.Background(), cfg)
	if err == nil {
		g.Close()
		t.Fatal("a gateway took a master key file another user owns (and can rewrite)")
	}
	if !strings.Contains(err.Error(), "store.master_key_file") || !strings.Contains(err.Error(), fmt.Sprintf("owned by uid %d", other.UID)) {
		t.Errorf("New = %v, want a refusal naming store.master_key_file and its owner", err)
	}
}
