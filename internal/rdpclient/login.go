package rdpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/airlock-hpc/airlock/internal/clientauth"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/rdpfile"
)

// httpClient reaches the gateway's API as the stored login says: the
// pinned certificate, the CA file, or the system's roots.
func httpClient(c clientauth.Credentials) (*http.Client, error) {
	conf, err := c.TLS()
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment}}, nil
}

// CmdLogin is `airlock login https://GATEWAY`: it asks for the user's name
// and password (password on standard input), exchanges them for an API
// token and keeps it for `airlock rdp SESSION`. On a Linux terminal the
// password is not echoed.
func CmdLogin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "your user name (asked when empty)")
	pin := fs.String("pin", "", "SHA-256 (hex) of the gateway's certificate, when no CA you trust signed it")
	gw := fs.String("gateway", "", "the gateway's https:// URL (or give it as the argument)")
	ca := fs.String("ca", "", "PEM file of the CA that signed the gateway's certificate (default: the system's)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: airlock login [flags] https://GATEWAY   (the password is read from standard input)\n\nflags:")
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
	if fs.NArg() == 1 && *gw == "" {
		*gw = fs.Arg(0)
	} else if fs.NArg() != 0 || *gw == "" {
		fs.Usage()
		return 2
	}
	u, err := url.Parse(*gw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return say("%q is not an https:// address", *gw)
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
	restore := noEcho(stdin)
	pass, _ := in.ReadString('\n')
	restore()
	pass = strings.TrimRight(pass, "\r\n")
	base := strings.TrimSuffix(u.String(), "/")
	creds := clientauth.Credentials{Gateway: base, CAFile: *ca, Pin: *pin}
	hc, err := httpClient(creds)
	if err != nil {
		return say("%v", err)
	}
	resp, err := requestToken(ctx, hc, base, *user, pass, "")
	if err == nil && resp.StatusCode == http.StatusUnauthorized && errorCode(resp) == "totp_required" {
		// The account has a second factor: the gateway wants its code too.
		fmt.Fprint(stderr, "code from your authenticator app (or a recovery code): ")
		code, _ := in.ReadString('\n')
		resp, err = requestToken(ctx, hc, base, *user, pass, strings.TrimSpace(code))
	}
	if err != nil {
		var ue *tls.CertificateVerificationError
		if errors.As(err, &ue) && len(ue.UnverifiedCertificates) > 0 {
			var uae x509.UnknownAuthorityError
			if errors.As(err, &uae) {
				sum := sha256.Sum256(ue.UnverifiedCertificates[0].Raw)
				return say("no CA you trust signed the gateway's certificate; if its SHA-256 is %x (ask your admins), run again with --pin %x", sum, sum)
			}
		}
		if errors.Is(err, clientauth.ErrPin) {
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
	creds.Token = tok.Token
	if err := clientauth.Save(creds); err != nil {
		return say("%v", err)
	}
	p, _ := clientauth.Path()
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
	l, err := clientauth.Load()
	if errors.Is(err, clientauth.ErrNoLogin) {
		return nil, fmt.Errorf("%s is neither an .airlock file nor a session of a gateway you logged in to (run airlock login https://GATEWAY first)", id)
	}
	if err != nil {
		return nil, err
	}
	hc, err := httpClient(l)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", l.Gateway+"/api/v1/sessions/"+url.PathEscape(id)+"/rdp", nil)
	req.Header.Set("Authorization", "Bearer "+l.Token)
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, clientauth.ErrPin) {
			return nil, errors.New("the gateway's certificate no longer matches the one you logged in with; not connecting")
		}
		return nil, fmt.Errorf("cannot reach %s: %w", l.Gateway, err)
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

// requestToken asks the gateway for a token with the password and, when
// not empty, the second factor's code.
func requestToken(ctx context.Context, hc *http.Client, base, user, pass, code string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/tokens", strings.NewReader(`{"name":"airlock login"}`))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/json")
	if code != "" {
		req.Header.Set("X-Airlock-TOTP", code)
	}
	return hc.Do(req)
}

// errorCode reads the "code" of the gateway's JSON error from resp, and
// puts the body back for the caller.
func errorCode(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	return e.Error.Code
}
