package rdpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/rdpfile"
)

// Login is what `airlock login` keeps (0600) in the user's config
// directory: the gateway, the pin of its certificate when it is not
// signed by a CA the system trusts, and an API token.
type Login struct {
	URL   string `json:"url"`
	Pin   string `json:"pin_sha256,omitempty"`
	Token string `json:"token"`
}

// loginPath is where the login is kept; AIRLOCK_CONFIG_DIR overrides the
// user's config directory (tests, several accounts).
func loginPath() (string, error) {
	dir := os.Getenv("AIRLOCK_CONFIG_DIR")
	if dir == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("no config directory for the login: %w", err)
		}
		dir = filepath.Join(d, "airlock")
	}
	return filepath.Join(dir, "login.json"), nil
}

// httpClient reaches the gateway's API: system roots, or the pin.
func httpClient(pin string) *http.Client {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if pin != "" {
		want, _ := hex.DecodeString(pin)
		conf.InsecureSkipVerify = true // the pin replaces the chain check
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return rdpfile.ErrPin
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], want) {
				return rdpfile.ErrPin
			}
			return nil
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment}}
}

// CmdLogin is `airlock login https://GATEWAY`: it asks for the user's name
// and password (password on standard input), exchanges them for an API
// token and keeps it for `airlock rdp SESSION`.
func CmdLogin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "your user name (asked when empty)")
	pin := fs.String("pin", "", "SHA-256 (hex) of the gateway's certificate, when no CA you trust signed it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: airlock login [flags] https://GATEWAY\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	say := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "airlock login: "+format+"\n", a...)
		return 1
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return say("%q is not an https:// address", fs.Arg(0))
	}
	*pin = strings.ToLower(strings.ReplaceAll(*pin, ":", ""))
	if *pin != "" && len(*pin) != 64 {
		return say("--pin: want the 64 hex digits of a SHA-256")
	}
	in := bufio.NewReader(stdin)
	if *user == "" {
		fmt.Fprint(stderr, "user: ")
		line, _ := in.ReadString('\n')
		*user = strings.TrimSpace(line)
	}
	fmt.Fprint(stderr, "password: ")
	pass, _ := in.ReadString('\n')
	pass = strings.TrimRight(pass, "\r\n")
	base := strings.TrimSuffix(u.String(), "/")
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/tokens", strings.NewReader(`{"name":"airlock login"}`))
	req.SetBasicAuth(*user, pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient(*pin).Do(req)
	if err != nil {
		var ue *tls.CertificateVerificationError
		if errors.As(err, &ue) && len(ue.UnverifiedCertificates) > 0 {
			var uae x509.UnknownAuthorityError
			if errors.As(err, &uae) {
				sum := sha256.Sum256(ue.UnverifiedCertificates[0].Raw)
				return say("no CA you trust signed the gateway's certificate; if its SHA-256 is %x (ask your admins), run again with --pin %x", sum, sum)
			}
		}
		if errors.Is(err, rdpfile.ErrPin) {
			return say("the gateway's certificate does not match --pin; not sending your password")
		}
		return say("cannot reach %s: %v", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != 201 && resp.StatusCode != 200 {
		return say("the gateway said no: %s", apiMessage(body, resp.Status))
	}
	var tok struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		return say("the gateway's answer has no token")
	}
	p, err := loginPath()
	if err != nil {
		return say("%v", err)
	}
	b, _ := json.Marshal(Login{URL: base, Pin: *pin, Token: tok.Token})
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return say("%v", err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return say("%v", err)
	}
	fmt.Fprintf(stdout, "logged in to %s as %s (token kept in %s)\n", base, *user, p)
	return 0
}

// apiMessage is the "message" of the gateway's JSON error, or status.
func apiMessage(body []byte, status string) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Error.Message != "" {
			return e.Error.Message
		}
		if e.Message != "" {
			return e.Message
		}
	}
	return status
}

// fetchFile asks the gateway of the stored login for a fresh .airlock
// file for session id.
func fetchFile(ctx context.Context, id string) (*rdpfile.File, error) {
	p, err := loginPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is neither an .airlock file nor a session of a gateway you logged in to (run airlock login https://GATEWAY first)", id)
	}
	if err != nil {
		return nil, err
	}
	var l Login
	if err := json.Unmarshal(b, &l); err != nil || l.Token == "" {
		return nil, fmt.Errorf("the stored login %s is damaged; run airlock login again", p)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", l.URL+"/api/v1/sessions/"+url.PathEscape(id)+"/rdp", nil)
	req.Header.Set("Authorization", "Bearer "+l.Token)
	resp, err := httpClient(l.Pin).Do(req)
	if err != nil {
		if errors.Is(err, rdpfile.ErrPin) {
			return nil, errors.New("the gateway's certificate no longer matches the one you logged in with; not connecting")
		}
		return nil, fmt.Errorf("cannot reach %s: %w", l.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, rdpfile.MaxSize+1))
	switch resp.StatusCode {
	case 201:
		return rdpfile.Parse(body)
	case 401:
		return nil, errors.New("your login is no longer valid; run airlock login again")
	case 404:
		return nil, fmt.Errorf("no session %s of yours (or this gateway has no RDP port)", id)
	}
	return nil, fmt.Errorf("the gateway said no: %s", apiMessage(body, resp.Status))
}
