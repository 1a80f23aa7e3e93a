package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/mailer"
	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/realtest/smtpsink"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestServePostgres: `airlock serve` from a config file whose store is a
// real PostgreSQL (store.driver postgres, a DSN on a socket directory, a
// password file): a user's token login lands in that database, the master
// key is the one stored there, and `airlock users totp-reset` works on it.
// A password file that cannot be read stops serve with the key's name.
func TestServePostgres(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	bin := realtest.Binary(t)
	state := t.TempDir()
	pw := filepath.Join(state, "db-password")
	if err := os.WriteFile(pw, []byte("unused-with-trust\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(state, "airlock.yaml")
	write := func(pwFile string) {
		y := "state_dir: " + state + "\nstore:\n  driver: postgres\n  dsn: \"" + dsn + "\"\n  password_file: " + pwFile + "\n"
		if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(state, "missing-password"))
	if out, err := exec.Command(bin, "serve", "--config", conf, "--listen", "127.0.0.1:0").CombinedOutput(); err == nil || !strings.Contains(string(out), "store.password_file") {
		t.Fatalf("serve with an unreadable password file: %v\n%s", err, out)
	}
	write(pw)
	if out, err := exec.Command(bin, "config", "check", conf).CombinedOutput(); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	add := exec.Command(bin, "users", "add", "alice", "--password-stdin", "--config", conf)
	add.Stdin = strings.NewReader(testPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	serve := exec.Command(bin, "serve", "--config", conf, "--listen", "127.0.0.1:0")
	stdout, _ := serve.StdoutPipe()
	logs := &lockedWriter{w: &strings.Builder{}}
	serve.Stderr = logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	tg := &testGateway{t: t, url: gatewayURL(t, stdout, logs), stateDir: state}
	tg.client().loginToken("alice")

	db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.GetUser(t.Context(), "alice"); err != nil {
		t.Fatalf("alice's login is not in PostgreSQL: %v", err)
	}
	key, err := os.ReadFile(filepath.Join(state, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := db.SharedSecret(t.Context(), "master.key", []byte("{}"))
	if err != nil || !bytes.Contains(stored, []byte("master.key")) {
		t.Fatalf("the master key is not in PostgreSQL: %q, %v", stored, err)
	}
	if _, err := shareFiles(t.Context(), db, nil, state, "master.key", "master.key"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(state, "master.key")); !bytes.Equal(again, key) {
		t.Fatal("the gateway's master key is not the stored one")
	}
	out, err := exec.Command(bin, "users", "totp-reset", "alice", "--config", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "alice has no second factor") {
		t.Fatalf("users totp-reset on PostgreSQL: %v\n%s", err, out)
	}
}

// TestPostgresDownIsTryAgain: with its PostgreSQL gone, the gateway
// answers a good token, a good cookie and a good password with 503 ("try
// again"), never 401 or 404: a store fault is not a "no".
func TestPostgresDownIsTryAgain(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	tg := startGateway(t, "", func(c *Config) {
		c.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		c.Store = db
		c.RecheckEvery = 50 * time.Millisecond // the fast path's cache then lasts 50 ms
	}, "alice")
	tok := tg.client().loginToken("alice")
	cookie := tg.client().loginCookie("alice")
	if code, body := tok.do("GET", "/api/v1/sessions", nil, nil); code != 200 {
		t.Fatalf("before: %d %s", code, body)
	}
	pg.Stop()
	err := realtest.WaitFor(5*time.Second, func() error {
		for name, c := range map[string]*client{"token": tok, "cookie": cookie} {
			if code, body := c.do("GET", "/api/v1/sessions", nil, nil); code != 503 {
				return fmt.Errorf("%s with the database down: %d %s, want 503", name, code, body)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
	req.SetBasicAuth("alice", testPassword)
	resp, err := tg.client().http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("a good password with the database down: %d, want 503", resp.StatusCode)
	}
}

// TestEmailLinkAnotherGateway: with two gateways on one PostgreSQL, a
// login link asked for at one is opened at the other (a balancer sends
// the browser wherever it likes): it logs in, once, and only in the
// browser that asked, as on one gateway.
func TestEmailLinkAnotherGateway(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	sink := smtpsink.Start(t)
	m, err := mailer.New(mailer.Config{URL: sink.URL, RootCAs: sink.CAFile, From: "airlock <airlock@gw.test>"})
	if err != nil {
		t.Fatal(err)
	}
	gateway := func() *testGateway {
		return startGateway(t, "", func(c *Config) {
			c.Store.Close()
			db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			c.Store = db
			c.Mailer, c.PublicURL = m, emailPublicURL
			c.EmailLogin = &EmailLogin{Domains: []string{"example.org"}, TTL: 5 * time.Minute}
		})
	}
	a, b := gateway(), gateway()
	asker := a.client()
	if st, body := askLink(t, asker, "carol@example.org"); st != 202 {
		t.Fatalf("ask at a: %d %s", st, body)
	}
	atA := linkFor(t, a, sink, "carol@example.org")
	atB := b.url + strings.TrimPrefix(atA, a.url)

	if resp, _ := b.client().get(atB); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("the link in another browser at b: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
	}
	sameBrowser := *asker // its cookie jar: cookies go by host, not port
	sameBrowser.tg = b
	resp, _ := sameBrowser.get(atB)
	if resp.StatusCode != 303 || !hasLoginCookie(resp) {
		t.Fatalf("the link in the browser that asked, at b: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
	}
	if resp, _ := asker.get(atA); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("the used link again at a: %d", resp.StatusCode)
	}
}

// TestOIDCAnotherGateway: with two gateways on one PostgreSQL, a login
// started at one comes back from the provider to the other (a balancer):
// it logs in, only in the browser that started it, and once.
func TestOIDCAnotherGateway(t *testing.T) {
	t.Parallel()
	pg := realtest.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	toPG := func(c *Config) {
		c.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		c.Store = db
	}
	a, _ := oidcGateway(t, nil, toPG)
	b := startGateway(t, "", func(c *Config) {
		c.Portal, c.OIDC = a.cfg.Portal, a.cfg.OIDC
		toPG(c)
	})
	started := a.client()
	cb := oidcCallback(t, started, "alice")
	atB := b.url + cb.RequestURI()

	if resp, _ := b.client().get(atB); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("the callback in another browser at b: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
	}
	same := *started // its cookie jar: cookies go by host, not port
	same.tg = b
	resp, _ := same.get(atB)
	if resp.StatusCode != 303 || !hasLoginCookie(resp) {
		t.Fatalf("the callback in the browser that started the login, at b: %d, login cookie %v", resp.StatusCode, hasLoginCookie(resp))
	}
	if resp, _ := started.get(cb.String()); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("the used callback again at a: %d", resp.StatusCode)
	}
}

// TestPostgresHostileText: bytes PostgreSQL cannot keep as text (a NUL,
// not UTF-8) in what a client sends are answered as on SQLite, never as a
// store fault: an id no session can have is 404, not 503 ("try again"
// for ever, logged as a fault), and the refusal it earns is in the audit
// log rather than lost with the failed INSERT. Seen failing: 503s, and
// no audit of the refused launch or login.
func TestPostgresHostileText(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	tg := startGateway(t, "", func(c *Config) {
		c.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		c.Store = db
	}, "alice")
	tok := tg.client().loginToken("alice")
	for _, p := range []string{"/api/v1/sessions/s-%FF", "/api/v1/sessions/s-%00", "/api/v1/sessions/%C3%28/shares"} {
		if code, body := tok.do("GET", p, nil, nil); code != 404 {
			t.Errorf("GET %s: %d %s, want 404", p, code, body)
		}
	}
	if code, body := tok.do("POST", "/api/v1/sessions", map[string]any{"profile": "no\u0000such"}, nil); code/100 != 4 {
		t.Errorf("launch of a profile with a NUL: %d %s, want a refusal", code, body)
	}
	req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
	req.SetBasicAuth("alice\x00", "wrong")
	if resp, err := tg.client().http.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	err := realtest.WaitFor(5*time.Second, func() error {
		evs, err := tg.cfg.Store.ListAudit(context.Background(), store.AuditFilter{})
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, e := range evs {
			got[e.Action] = true
		}
		for _, a := range []string{"launch_refused", "login_failed"} {
			if !got[a] {
				return fmt.Errorf("no %s in the audit log", a)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// faultySpender is the real PostgreSQL store whose Spend fails while fail
// is set: a store fault at the moment a browser RDP ticket is spent.
type faultySpender struct {
	*postgres.DB
	fail atomic.Bool
}

func (f *faultySpender) Spend(ctx context.Context, key string, now, expires time.Time) error {
	if f.fail.Load() {
		return errors.New("injected: the database did not answer")
	}
	return f.DB.Spend(ctx, key, now, expires)
}

// TestRDPTicketStoreFaultIsTryAgain: a store fault while a browser RDP
// ticket is spent is a 503 ("try again"), and trying again with the same
// ticket is not refused as used: the fault spent nothing. Seen failing:
// this gateway's own replay guard had kept the nonce, so the retry was 401.
func TestRDPTicketStoreFaultIsTryAgain(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	var fs *faultySpender
	tg := startGateway(t, "", func(c *Config) {
		c.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		fs = &faultySpender{DB: db}
		c.Store = fs
	}, "alice")
	alice := tg.client().loginToken("alice")
	const sid = "s-0000000000aa"
	tk, err := ticket.Sign(tg.g.rdpWebKey(), ticket.Claims{Session: sid, Connector: rdpWebConnector, User: "alice",
		Mode: ticket.Mode(session.Control), Expires: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	req := rdpRequest(t, sid, tk, realtest.RDPConnectionRequest(1))
	fs.fail.Store(true)
	if _, p := rdpWebExchange(t, tg, alice, "/rdp/"+sid, req); p.Kind() != rdcleanpath.KindGeneralError || p.Error.HTTPStatus != 503 {
		t.Fatalf("with the store failing: %v %+v, want HTTP 503", p.Kind(), p.Error)
	}
	fs.fail.Store(false)
	// Past the ticket now: no such session.
	if _, p := rdpWebExchange(t, tg, alice, "/rdp/"+sid, req); p.Kind() != rdcleanpath.KindGeneralError || p.Error.HTTPStatus != 404 {
		t.Fatalf("the same ticket once the store answers: %v %+v, want HTTP 404 (no such session), not 401", p.Kind(), p.Error)
	}
	// And spent now, for good.
	if _, p := rdpWebExchange(t, tg, alice, "/rdp/"+sid, req); p.Kind() != rdcleanpath.KindGeneralError || p.Error.HTTPStatus != 401 {
		t.Fatalf("the ticket a third time: %v %+v, want HTTP 401", p.Kind(), p.Error)
	}
}

// faultyLogins is the real PostgreSQL store whose CreateLogin fails while
// fail is set.
type faultyLogins struct {
	*postgres.DB
	fail atomic.Bool
}

func (f *faultyLogins) CreateLogin(ctx context.Context, l session.Login) error {
	if f.fail.Load() {
		return errors.New("injected: the database did not answer")
	}
	return f.DB.CreateLogin(ctx, l)
}

// TestEmailLinkStoreFaultIsTryAgain: a store fault while an e-mailed link
// logs in is a 503 ("try again"), and the link then still logs in, once:
// the fault used nothing. Seen failing: the link was taken before the
// login was recorded, so trying again was 401 "used".
func TestEmailLinkStoreFaultIsTryAgain(t *testing.T) {
	t.Parallel()
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	sink := smtpsink.Start(t)
	m, err := mailer.New(mailer.Config{URL: sink.URL, RootCAs: sink.CAFile, From: "airlock <airlock@gw.test>"})
	if err != nil {
		t.Fatal(err)
	}
	var fl *faultyLogins
	a := startGateway(t, "", func(c *Config) {
		c.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		fl = &faultyLogins{DB: db}
		c.Store = fl
		c.Mailer, c.PublicURL = m, emailPublicURL
		c.EmailLogin = &EmailLogin{Domains: []string{"example.org"}, TTL: 5 * time.Minute}
	})
	asker := a.client()
	if st, body := askLink(t, asker, "carol@example.org"); st != 202 {
		t.Fatalf("ask: %d %s", st, body)
	}
	link := linkFor(t, a, sink, "carol@example.org")
	fl.fail.Store(true)
	if resp, _ := asker.get(link); resp.StatusCode != 503 || hasLoginCookie(resp) {
		t.Fatalf("the link with the store failing: %d, login cookie %v; want 503", resp.StatusCode, hasLoginCookie(resp))
	}
	fl.fail.Store(false)
	if resp, _ := asker.get(link); resp.StatusCode != 303 || !hasLoginCookie(resp) {
		t.Fatalf("the link again once the store answers: %d, login cookie %v; want a login", resp.StatusCode, hasLoginCookie(resp))
	}
	if resp, _ := asker.get(link); resp.StatusCode != 401 || hasLoginCookie(resp) {
		t.Fatalf("the used link a third time: %d", resp.StatusCode)
	}
}
