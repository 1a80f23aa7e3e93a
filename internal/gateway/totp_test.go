package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth/totp"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/rdpclient"
	"github.com/airlock-hpc/airlock/internal/session"
	"github.com/airlock-hpc/airlock/internal/store"
)

// testClock is a clock the test moves; it starts 10 s into a time step.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().Truncate(totp.Period).Add(10 * time.Second).UnixNano())
	return c
}
func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// code is the code for secret at the clock's time.
func (c *testClock) code(t testing.TB, secret string) string {
	t.Helper()
	s, err := totp.Code(secret, totp.Step(c.now()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// postForm posts a form as the portal's pages do (same origin).
func (c *client) postForm(path string, v url.Values) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.tg.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.tg.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return c.send(req)
}

// password posts the login form; a user with a second factor gets a 303
// to /login/totp and only the pending cookie.
func (c *client) password(user string) *http.Response {
	c.t.Helper()
	resp, _ := c.postForm("/login", url.Values{"user": {user}, "password": {testPassword}, "next": {"/sessions/x"}})
	return resp
}

func (c *client) cookie(name string) string {
	u, _ := url.Parse(c.tg.url)
	for _, k := range c.http.Jar.Cookies(u) {
		if k.Name == name {
			return k.Value
		}
	}
	return ""
}

var (
	enrolField  = regexp.MustCompile(`name="enrol" value="([^"]+)"`)
	secretField = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)
	qrField     = regexp.MustCompile(`src="data:image/png;base64,([^"]+)"`)
	recoveryRe  = regexp.MustCompile(`<li><code>([a-z0-9-]+)</code></li>`)
)

// enrolForm reads the key and the sealed form field off an enrolment page.
func enrolForm(t testing.TB, page string) (secret, sealed string) {
	t.Helper()
	s, f := secretField.FindStringSubmatch(page), enrolField.FindStringSubmatch(page)
	if s == nil || f == nil {
		t.Fatalf("no enrolment form in %s", page)
	}
	q := qrField.FindStringSubmatch(page)
	if q == nil {
		t.Fatalf("enrolment page has no inline QR code")
	}
	// The QR code holds the key shown (zbarimg reads it, when installed).
	if _, err := exec.LookPath("zbarimg"); err == nil {
		png, err := base64.StdEncoding.DecodeString(html.UnescapeString(q[1]))
		file := filepath.Join(t.TempDir(), "qr.png")
		if err != nil || os.WriteFile(file, png, 0o600) != nil {
			t.Fatalf("QR code: %v", err)
		}
		out, err := exec.Command("zbarimg", "-q", "--raw", file).Output()
		u, perr := url.Parse(strings.TrimSpace(string(out)))
		if err != nil || perr != nil || u.Scheme != "otpauth" || u.Query().Get("secret") != s[1] || u.Query().Get("issuer") != "airlock" {
			t.Fatalf("QR code reads %q (%v); want otpauth://totp/... with secret %s", out, err, s[1])
		}
	}
	return s[1], html.UnescapeString(f[1])
}

func recoveryCodes(t testing.TB, page string) []string {
	t.Helper()
	var out []string
	for _, m := range recoveryRe.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	if len(out) != totp.RecoveryCount {
		t.Fatalf("%d recovery codes on the page, want %d: %s", len(out), totp.RecoveryCount, page)
	}
	return out
}

func totpGateway(t *testing.T, stateDir string, clk *testClock, required []string, users ...string) *testGateway {
	return totpGatewayWith(t, stateDir, clk, func(c *Config) { c.TOTP.RequiredGroups = required }, users...)
}

func totpGatewayWith(t *testing.T, stateDir string, clk *testClock, mod func(*Config), users ...string) *testGateway {
	pt, err := portal.New()
	if err != nil {
		t.Fatal(err)
	}
	return startGateway(t, stateDir, func(c *Config) {
		c.Portal, c.Now = pt, clk.now
		mod(c)
	}, users...)
}

// TestTOTP: a user enrols in the portal; afterwards a password gives only
// a pending state that nothing but the second step accepts; codes and
// recovery codes work once; wrong codes are limited; removing needs a
// code or an admin; tokens need the code too.
func TestTOTP(t *testing.T) {
	clk := newTestClock()
	tg := totpGateway(t, "", clk, nil, "alice", "bob", "admin")

	// Enrol: alice logs in with her password alone (optional for her).
	alice := tg.client().loginCookie("alice")
	resp, page := alice.get(tg.url + "/account/totp")
	if resp.StatusCode != 200 || strings.Contains(resp.Header.Get("Cache-Control"), "no-store") == false {
		t.Fatalf("account page: %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	secret, sealed := enrolForm(t, page)
	if strings.Contains(page, "/account/totp?") || strings.Contains(resp.Request.URL.String(), secret) {
		t.Fatalf("the key is in a URL")
	}
	_, page2 := alice.get(tg.url + "/account/totp") // a second form, kept for later
	secret2, sealed2 := enrolForm(t, page2)

	// bob cannot confirm alice's form (enrol his session over hers, or a
	// key alice's browser was shown).
	bob := tg.client().loginCookie("bob")
	if resp, _ := bob.postForm("/account/totp", url.Values{"enrol": {sealed}, "code": {clk.code(t, secret)}}); resp.StatusCode != 400 {
		t.Fatalf("bob confirming alice's enrolment form: %d, want 400", resp.StatusCode)
	}
	if resp, _ := alice.postForm("/account/totp", url.Values{"enrol": {sealed}, "code": {"000000"}}); resp.StatusCode != 401 {
		t.Fatalf("enrolment with a wrong code: %d, want 401", resp.StatusCode)
	}
	enrolCode := clk.code(t, secret)
	resp, page = alice.postForm("/account/totp", url.Values{"enrol": {sealed}, "code": {enrolCode}})
	if resp.StatusCode != 200 {
		t.Fatalf("enrol: %d %s", resp.StatusCode, page)
	}
	recovery := recoveryCodes(t, page)
	// The second form, now that alice has a second factor: refused, not
	// a silent replacement.
	clk.advance(totp.Period)
	if resp, _ := alice.postForm("/account/totp", url.Values{"enrol": {sealed2}, "code": {clk.code(t, secret2)}}); resp.StatusCode != 409 {
		t.Fatalf("enrolling over an enrolment: %d, want 409", resp.StatusCode)
	}
	clk.advance(-totp.Period)

	// The password now gives only a pending state.
	b1 := tg.client()
	if resp := b1.password("alice"); resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login/totp?") {
		t.Fatalf("password of an enrolled user: %d %q; want 303 to /login/totp", resp.StatusCode, resp.Header.Get("Location"))
	}
	pending := b1.cookie(pendingCookie)
	if pending == "" || b1.cookie(loginCookie) != "" {
		t.Fatalf("after the password: pending %q, login %q; want only a pending cookie", pending, b1.cookie(loginCookie))
	}
	// Skip the second step: the portal, the API, the pending secret as a
	// login cookie or as a bearer token.
	if resp, _ := b1.get(tg.url + "/"); resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login?") {
		t.Errorf("portal with only the pending state: %d %q; want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if st, body := b1.do("GET", "/api/v1/me", nil, nil); st != 401 {
		t.Errorf("API with only the pending state: %d %s", st, body)
	}
	forged := tg.client()
	u, _ := url.Parse(tg.url)
	forged.http.Jar.SetCookies(u, []*http.Cookie{{Name: loginCookie, Value: pending}})
	if st, body := forged.do("GET", "/api/v1/me", nil, nil); st != 401 {
		t.Errorf("pending secret as the login cookie: %d %s", st, body)
	}
	if st, body := (&client{t: t, tg: tg, http: forged.http, token: pending}).do("GET", "/api/v1/me", nil, nil); st != 401 {
		t.Errorf("pending secret as a token: %d %s", st, body)
	}

	// Another user's pending state: bob enrols too; his password, then
	// alice's right code with her name in the form: refused, nobody is
	// logged in as alice.
	_, bobPage := bob.get(tg.url + "/account/totp")
	bobSecret, bobSealed := enrolForm(t, bobPage)
	if resp, _ := bob.postForm("/account/totp", url.Values{"enrol": {bobSealed}, "code": {clk.code(t, bobSecret)}}); resp.StatusCode != 200 {
		t.Fatalf("bob enrols: %d", resp.StatusCode)
	}
	mallory := tg.client()
	mallory.password("bob")
	clk.advance(totp.Period)
	if resp, _ := mallory.postForm("/login/totp", url.Values{"code": {clk.code(t, secret)}, "user": {"alice"}}); resp.StatusCode != 401 || mallory.cookie(loginCookie) != "" {
		t.Fatalf("bob's pending state with alice's code: %d, want 401", resp.StatusCode)
	}
	clk.advance(-totp.Period)

	// Replay: the code that confirmed the enrolment, in the same step.
	if resp, _ := b1.postForm("/login/totp", url.Values{"code": {enrolCode}, "next": {"/"}}); resp.StatusCode != 401 {
		t.Fatalf("the enrolment's code replayed at login: %d, want 401", resp.StatusCode)
	}
	// bob's pending state with alice's next code and her name in the form:
	// his pending state is his.
	clk.advance(totp.Period)
	b2 := tg.client()
	b2.password("admin") // admin has no second factor: logged in directly
	if b2.cookie(loginCookie) == "" || b2.cookie(pendingCookie) != "" {
		t.Fatalf("a user without a second factor did not get a plain login")
	}
	good := clk.code(t, secret)
	resp, _ = b1.postForm("/login/totp", url.Values{"code": {good}, "next": {"/sessions/x"}, "user": {"bob"}})
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/sessions/x" {
		t.Fatalf("the second step: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var me struct{ User string }
	if st, _ := b1.do("GET", "/api/v1/me", nil, &me); st != 200 || me.User != "alice" {
		t.Fatalf("after the second step: %d %+v", st, me)
	}
	// The pending state is spent: posting it again (another good code)
	// logs nobody in.
	again := tg.client()
	again.http.Jar.SetCookies(u, []*http.Cookie{{Name: pendingCookie, Value: pending}})
	clk.advance(totp.Period)
	if resp, _ := again.postForm("/login/totp", url.Values{"code": {clk.code(t, secret)}}); resp.StatusCode == 303 || again.cookie(loginCookie) != "" {
		t.Fatalf("a used pending state logged in again: %d", resp.StatusCode)
	}
	// Replay in another browser: the code b1 just used, in its step.
	clk.advance(-totp.Period)
	b3 := tg.client()
	b3.password("alice")
	if resp, _ := b3.postForm("/login/totp", url.Values{"code": {good}}); resp.StatusCode != 401 || b3.cookie(loginCookie) != "" {
		t.Fatalf("a used code in another browser: %d, want 401", resp.StatusCode)
	}
	// A recovery code works once.
	if resp, _ := b3.postForm("/login/totp", url.Values{"code": {strings.ToUpper(recovery[0])}}); resp.StatusCode != 303 {
		t.Fatalf("recovery code: %d", resp.StatusCode)
	}
	b4 := tg.client()
	b4.password("alice")
	if resp, _ := b4.postForm("/login/totp", url.Values{"code": {recovery[0]}}); resp.StatusCode != 401 || b4.cookie(loginCookie) != "" {
		t.Fatalf("a used recovery code: %d, want 401", resp.StatusCode)
	}

	// Brute force: after MaxFailures wrong codes even the right one is
	// refused until the window has passed.
	for i := range 4 { // one failure is counted already (the recovery code)
		if resp, _ := b4.postForm("/login/totp", url.Values{"code": {"00000" + string(rune('0'+i))}}); resp.StatusCode != 401 {
			t.Fatalf("wrong code %d: %d", i, resp.StatusCode)
		}
	}
	clk.advance(totp.Period)
	if resp, _ := b4.postForm("/login/totp", url.Values{"code": {clk.code(t, secret)}}); resp.StatusCode != 429 || b4.cookie(loginCookie) != "" {
		t.Fatalf("the right code after 5 wrong ones: %d, want 429", resp.StatusCode)
	}
	clk.advance(tg.g.cfg.TOTP.Window)
	b5 := tg.client()
	b5.password("alice")
	if resp, _ := b5.postForm("/login/totp", url.Values{"code": {clk.code(t, secret)}}); resp.StatusCode != 303 {
		t.Fatalf("the right code after the window: %d", resp.StatusCode)
	}

	// Tokens: the code in a header, once.
	token := func(code string) (int, string) {
		req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
		req.SetBasicAuth("alice", testPassword)
		if code != "" {
			req.Header.Set(totpHeader, code)
		}
		resp, body := tg.client().send(req)
		return resp.StatusCode, body
	}
	if st, body := token(""); st != 401 || !strings.Contains(body, "totp_required") {
		t.Fatalf("token without a code: %d %s", st, body)
	}
	clk.advance(totp.Period)
	tc := clk.code(t, secret)
	if st, body := token(tc); st != 201 {
		t.Fatalf("token with the code: %d %s", st, body)
	}
	if st, body := token(tc); st != 401 {
		t.Fatalf("token with a replayed code: %d %s", st, body)
	}

	// airlock login asks for the code when the gateway wants one.
	t.Setenv("AIRLOCK_CONFIG_DIR", t.TempDir())
	pin := sha256.Sum256(tg.g.cert.Certificate[0])
	clk.advance(totp.Period)
	var lout bytes.Buffer
	if code := rdpclient.CmdLogin(t.Context(), []string{"--user", "alice", "--pin", hex.EncodeToString(pin[:]), tg.url},
		strings.NewReader(testPassword+"\n"+clk.code(t, secret)+"\n"), &lout, &lout); code != 0 || !strings.Contains(lout.String(), "authenticator app") {
		t.Fatalf("airlock login with a code: exit %d: %s", code, lout.String())
	}
	lout.Reset()
	if code := rdpclient.CmdLogin(t.Context(), []string{"--user", "alice", "--pin", hex.EncodeToString(pin[:]), tg.url},
		strings.NewReader(testPassword+"\n"+clk.code(t, secret)+"\n"), &lout, &lout); code != 1 {
		t.Fatalf("airlock login with a replayed code: exit %d: %s", code, lout.String())
	}

	// Removing: a wrong code is refused; bob is no admin; an admin can.
	if resp, _ := b5.postForm("/account/totp/remove", url.Values{"code": {"123456"}}); resp.StatusCode != 401 {
		t.Fatalf("remove with a wrong code: %d", resp.StatusCode)
	}
	if _, err := tg.cfg.Store.GetTOTP(t.Context(), "alice"); err != nil {
		t.Fatalf("second factor gone after a wrong code: %v", err)
	}
	if st, _ := bob.do("DELETE", "/api/v1/admin/users/alice/totp", nil, nil); st != 403 {
		t.Fatalf("bob resetting alice: %d", st)
	}
	b6 := tg.client()
	b6.password("alice") // between her password and her code...
	if st, _ := b2.do("DELETE", "/api/v1/admin/users/alice/totp", nil, nil); st != 204 {
		t.Fatalf("admin reset: %d", st)
	}
	// ...the admin removed it: nothing more to ask (she is not required).
	if resp, _ := b6.get(tg.url + "/login/totp?next=/"); resp.StatusCode != 303 || b6.cookie(loginCookie) == "" {
		t.Fatalf("second step after an admin reset: %d", resp.StatusCode)
	}
	if _, err := tg.cfg.Store.GetTOTP(t.Context(), "alice"); err == nil {
		t.Fatalf("second factor still there after the admin's reset")
	}
	evs, _ := tg.cfg.Store.ListAudit(t.Context(), store.AuditFilter{Actor: "admin", Limit: 20})
	if len(evs) == 0 || !strings.Contains(evs[0].Detail, "alice") || evs[0].Action != "totp_remove" {
		t.Errorf("admin reset not audited: %+v", evs)
	}
}

// TestTOTPRequired: a member of a required group with no second factor
// gets nothing before enrolling: no login, no token, and a token made
// before the requirement stops working.
func TestTOTPRequired(t *testing.T) {
	clk := newTestClock()
	tg := totpGateway(t, "", clk, nil, "carol")
	old := tg.client().loginToken("carol")
	oldLogin := tg.client().loginCookie("carol")
	stateDir := tg.stateDir
	tg.stop()
	tg = totpGateway(t, stateDir, clk, []string{"*"}, "carol")
	old.tg, oldLogin.tg = tg, tg
	if st, body := old.do("GET", "/api/v1/me", nil, nil); st != 401 || !strings.Contains(body, "totp_enrol_required") {
		t.Fatalf("a token made before the requirement: %d %s", st, body)
	}
	if st, body := oldLogin.do("GET", "/api/v1/me", nil, nil); st != 401 || !strings.Contains(body, "totp_enrol_required") {
		t.Fatalf("a login made before the requirement: %d %s", st, body)
	}
	req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
	req.SetBasicAuth("carol", testPassword)
	if resp, body := tg.client().send(req); resp.StatusCode != 403 || !strings.Contains(body, "totp_enrol_required") {
		t.Fatalf("new token before enrolling: %d %s", resp.StatusCode, body)
	}

	b := tg.client()
	if resp := b.password("carol"); resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login/totp") {
		t.Fatalf("password: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := b.get(tg.url + "/"); resp.StatusCode != 303 {
		t.Fatalf("portal before enrolling: %d", resp.StatusCode)
	}
	if st, _ := b.do("GET", "/api/v1/sessions", nil, nil); st != 401 {
		t.Fatalf("API before enrolling: %d", st)
	}
	resp, page := b.get(tg.url + "/login/totp?next=/")
	if resp.StatusCode != 200 || !strings.Contains(page, "needs an authenticator") {
		t.Fatalf("second step of a required user: %d %s", resp.StatusCode, page)
	}
	secret, sealed := enrolForm(t, page)
	// Another browser that also knows carol's password cannot confirm
	// this browser's form (the key is bound to the pending state).
	other := tg.client()
	other.password("carol")
	if resp, _ := other.postForm("/login/totp", url.Values{"enrol": {sealed}, "code": {clk.code(t, secret)}}); resp.StatusCode != 400 {
		t.Fatalf("another browser confirming the form: %d, want 400", resp.StatusCode)
	}
	resp, page = b.postForm("/login/totp", url.Values{"enrol": {sealed}, "code": {clk.code(t, secret)}, "next": {"/"}})
	if resp.StatusCode != 200 {
		t.Fatalf("enrol at login: %d %s", resp.StatusCode, page)
	}
	recoveryCodes(t, page)
	if st, _ := b.do("GET", "/api/v1/sessions", nil, nil); st != 200 {
		t.Fatalf("API after enrolling: %d", st)
	}
	// The other browser's pending state now needs a code, not enrolment.
	if _, page := other.get(tg.url + "/login/totp"); strings.Contains(page, `name="enrol"`) {
		t.Fatalf("enrolment offered to a user who has a second factor")
	}
	clk.advance(totp.Period)
	if resp, _ := other.postForm("/login/totp", url.Values{"code": {clk.code(t, secret)}}); resp.StatusCode != 303 {
		t.Fatalf("code in the other browser: %d", resp.StatusCode)
	}
}

// TestTOTPBrowser: enrolment at login and a later login with a code, in
// headless Chromium; the test computes the codes from the key the page
// shows.
func TestTOTPBrowser(t *testing.T) {
	needBrowser(t)
	clk := newTestClock()
	tg := totpGateway(t, "", clk, []string{"*"}, "carol")
	b := startBrowser(t, "totp.mjs", map[string]string{"base": tg.url, "user": "carol", "password": testPassword})
	e := b.wait("enrol", 60*time.Second)
	qr, _ := e["qr"].(map[string]any)
	if qr["width"] != 200.0 || qr["scheme"] != "data:image/png;base64," || e["skipped"] != "/login" || e["skipMe"] != 401.0 || e["secretChanged"] != true {
		t.Fatalf("enrolment page: %v", e)
	}
	secret, _ := e["secret"].(string)
	b.send(clk.code(t, secret))
	en := b.wait("enrolled", 60*time.Second)
	me, _ := en["me"].(map[string]any)
	if len(toStrings(en["codes"])) != totp.RecoveryCount || me["user"] != "carol" || en["url"] != tg.url+"/" {
		t.Fatalf("after enrolling: %v", en)
	}
	clk.advance(totp.Period)
	if s := b.wait("second", 60*time.Second); s["hasQR"] != false {
		t.Fatalf("second login offered enrolment: %v", s)
	}
	b.send(clk.code(t, secret))
	l := b.wait("login", 60*time.Second)
	if me, _ := l["me"].(map[string]any); me["user"] != "carol" || l["url"] != tg.url+"/" {
		t.Fatalf("login with a code: %v", l)
	}
	if d := b.wait("done", 30*time.Second); len(d["errors"].([]any)) != 0 {
		t.Fatalf("page errors: %v", d["errors"])
	}
}

// TestTOTPTwoGateways: two gateways on one store agree on used codes: one
// code sent to both at once, from several browsers that passed the
// password (someone who watched it typed), logs in once.
func TestTOTPTwoGateways(t *testing.T) {
	clk := newTestClock()
	// The losers' wrong codes must not lock the next round out.
	many := func(c *Config) { c.TOTP.MaxFailures = 1000 }
	tg1 := totpGatewayWith(t, "", clk, many, "alice")
	tg2 := totpGatewayWith(t, tg1.stateDir, clk, many)
	alice := tg1.client().loginCookie("alice")
	_, page := alice.get(tg1.url + "/account/totp")
	secret, sealed := enrolForm(t, page)
	if resp, _ := alice.postForm("/account/totp", url.Values{"enrol": {sealed}, "code": {clk.code(t, secret)}}); resp.StatusCode != 200 {
		t.Fatalf("enrol: %d", resp.StatusCode)
	}
	for round := range 12 {
		clk.advance(totp.Period)
		code := clk.code(t, secret)
		var bs []*client
		for i := range 8 {
			b := []*testGateway{tg1, tg2}[i%2].client()
			if resp := b.password("alice"); resp.StatusCode != 303 {
				t.Fatalf("password: %d", resp.StatusCode)
			}
			bs = append(bs, b)
		}
		start := make(chan struct{})
		results := make(chan int, len(bs))
		for _, b := range bs {
			go func() {
				<-start
				resp, _ := b.postForm("/login/totp", url.Values{"code": {code}})
				results <- resp.StatusCode
			}()
		}
		close(start)
		var won []int
		for range bs {
			if st := <-results; st == 303 {
				won = append(won, st)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: one code sent by 8 browsers to two gateways: %d logged in, want 1", round, len(won))
		}
	}
}

// TestTOTPGuessesAtOnce: guesses sent all at once from many pending
// logins get no more tries than the limit: each attempt is counted before
// its code is looked at.
func TestTOTPGuessesAtOnce(t *testing.T) {
	clk := newTestClock()
	tg := totpGateway(t, "", clk, nil, "alice")
	alice := tg.client().loginCookie("alice")
	_, page := alice.get(tg.url + "/account/totp")
	secret, sealed := enrolForm(t, page)
	if resp, _ := alice.postForm("/account/totp", url.Values{"enrol": {sealed}, "code": {clk.code(t, secret)}}); resp.StatusCode != 200 {
		t.Fatalf("enrol: %d", resp.StatusCode)
	}
	clk.advance(totp.Period)
	right := clk.code(t, secret)
	var bs []*client
	for range 16 {
		b := tg.client()
		b.password("alice")
		bs = append(bs, b)
	}
	start := make(chan struct{})
	results := make(chan int, len(bs))
	for i, b := range bs {
		go func() {
			<-start
			// Wrong codes, none of them the right one.
			guess := fmt.Sprintf("%06d", i)
			if guess == right {
				guess = "999999"
			}
			resp, _ := b.postForm("/login/totp", url.Values{"code": {guess}})
			results <- resp.StatusCode
		}()
	}
	close(start)
	tried := 0
	for range bs {
		switch st := <-results; st {
		case 401:
			tried++
		case 429:
		default:
			t.Fatalf("a wrong guess: %d", st)
		}
	}
	if max := tg.g.cfg.TOTP.MaxFailures; tried > max {
		t.Fatalf("%d guesses sent at once were checked; the limit is %d", tried, max)
	}
	b := tg.client()
	b.password("alice")
	if resp, _ := b.postForm("/login/totp", url.Values{"code": {right}}); resp.StatusCode != 429 {
		t.Fatalf("the right code after the guesses: %d, want 429", resp.StatusCode)
	}
}

// totpFaultyStore fails the second factor's lookups while down is set.
type totpFaultyStore struct {
	store.Store
	down atomic.Bool
}

func (f *totpFaultyStore) GetTOTP(ctx context.Context, user string) (session.TOTP, error) {
	if f.down.Load() {
		return session.TOTP{}, errStoreDown
	}
	return f.Store.GetTOTP(ctx, user)
}

// TestTOTPStoreFault: a store that cannot say whether a user has a second
// factor is "try again" (503), never a login without the code, nor "no".
func TestTOTPStoreFault(t *testing.T) {
	clk := newTestClock()
	var fs *totpFaultyStore
	tg := totpGatewayWith(t, "", clk, func(c *Config) {
		fs = &totpFaultyStore{Store: c.Store}
		c.Store = fs
		c.TOTP.RequiredGroups = []string{"*"}
	}, "alice")
	fs.down.Store(true)
	b := tg.client()
	if resp := b.password("alice"); resp.StatusCode != 503 || b.cookie(loginCookie) != "" {
		t.Fatalf("password while the store is down: %d; want 503 and no login", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", tg.url+"/api/v1/tokens", nil)
	req.SetBasicAuth("alice", testPassword)
	if resp, body := tg.client().send(req); resp.StatusCode != 503 {
		t.Fatalf("token while the store is down: %d %s; want 503", resp.StatusCode, body)
	}
	fs.down.Store(false)
	if resp := b.password("alice"); resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login/totp") {
		t.Fatalf("password once the store is back: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
