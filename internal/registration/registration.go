// Package registration is how a runner on a compute node tells the gateway
// that its session is ready (the connectors' ports and certificate pin) or
// has ended: one HTTPS POST to the gateway, authenticated by a token the
// gateway derived for that session and handed to the batch job in its
// environment. The gateway side checks the token, the session's state and
// the address the request came from; see gateway.register.
package registration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/contract"
)

// The environment of a runner started by a remote backend. Only the
// runner reads them (and unsets them): nothing inside the seal sees them.
const (
	// EnvURL is the gateway's base URL (https://host:port).
	EnvURL = "AIRLOCK_GATEWAY_URL"
	// EnvSHA256 pins the gateway's certificate (hex SHA-256 of the leaf)
	// when it is self-signed; empty: verify it with the system's roots.
	EnvSHA256 = "AIRLOCK_GATEWAY_SHA256"
	// EnvToken is the session's registration token.
	EnvToken = "AIRLOCK_REGISTER_TOKEN"
	// EnvTicketKey is the session's ticket key, hex (the spec names it in
	// ticket_key_env).
	EnvTicketKey = "AIRLOCK_TICKET_KEY"
)

// Path is the gateway's registration endpoint for session id.
func Path(id string) string { return "/api/v1/register/" + id }

// Registration is the body of a registration POST.
type Registration struct {
	// Event is contract.EventReady, contract.EventExit or
	// contract.EventEgress.
	Event contract.EventKind `json:"event"`
	// Ports are the connectors' TCP ports on the node, by connector name.
	// The runner cannot name a host: the gateway dials the node the
	// scheduler says the job runs on.
	Ports map[string]int `json:"ports,omitempty"`
	// TLSSHA256 pins the session certificate the connectors present.
	TLSSHA256 string `json:"tls_sha256,omitempty"`
	// Warnings are what the runner could not set up but started the
	// session without (ready), as its ready event lists them: a pod's
	// runner that fell back to the pod's isolation says so here. At most
	// MaxWarnings; the gateway audits them.
	Warnings []string `json:"warnings,omitempty"`
	// Reason and Code say why the session ended (exit).
	Reason string `json:"reason,omitempty"`
	Code   int    `json:"code,omitempty"`
	// Egress are a kiosk's proxy decisions since the last such
	// registration (contract.EventEgress), at most MaxEgress: sent in
	// batches, so a busy kiosk costs the gateway one check with the
	// scheduler every few seconds, not one per connection.
	Egress []Egress `json:"egress,omitempty"`
}

// Egress is one decision of a kiosk's egress proxy, as an egress event
// carries it.
type Egress struct {
	Target  string `json:"target,omitempty"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
}

// MaxEgress bounds Registration.Egress.
const MaxEgress = 256

// MaxWarnings bounds Registration.Warnings; a backend keeps no more.
const MaxWarnings = 16

// Client posts a session's registrations to the gateway.
type Client struct {
	URL   string
	Token string
	ID    string
	http  *http.Client
}

// FromEnv makes a client from the runner's environment and removes the
// variables from it.
func FromEnv(id string) (*Client, error) {
	c := &Client{URL: os.Getenv(EnvURL), Token: os.Getenv(EnvToken), ID: id}
	sha := os.Getenv(EnvSHA256)
	for _, k := range []string{EnvURL, EnvToken, EnvSHA256} {
		os.Unsetenv(k)
	}
	if !strings.HasPrefix(c.URL, "https://") {
		return nil, fmt.Errorf("registration: %s=%q: want the gateway's https:// URL", EnvURL, c.URL)
	}
	if c.Token == "" {
		return nil, fmt.Errorf("registration: %s is not set", EnvToken)
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if sha != "" {
		tc.InsecureSkipVerify = true // replaced by the pin: the gateway's own self-signed certificate
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("gateway presented no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if hex.EncodeToString(sum[:]) != strings.ToLower(sha) {
				return errors.New("gateway certificate does not match " + EnvSHA256)
			}
			return nil
		}
	}
	c.http = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return c, nil
}

// RefusedError is the gateway's final answer: retrying will not help.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("gateway refused the registration (%d): %s", e.Status, e.Message)
}

// Send posts reg, retrying connection failures and 5xx answers (the
// gateway may be restarting) with backoff until ctx ends. A 4xx answer is
// final and returned as *RefusedError.
func (c *Client) Send(ctx context.Context, reg Registration) error {
	body, err := json.Marshal(reg)
	if err != nil {
		return err
	}
	wait := 250 * time.Millisecond
	for {
		err := c.once(ctx, body)
		var refused *RefusedError
		if err == nil || errors.As(err, &refused) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("registration %s: %w (last error: %v)", reg.Event, context.Cause(ctx), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (c *Client) once(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+Path(c.ID), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode < 500:
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		m := strings.TrimSpace(string(msg))
		if json.Unmarshal(msg, &e) == nil && e.Error.Message != "" {
			m = e.Error.Message
		}
		return &RefusedError{Status: resp.StatusCode, Message: m}
	default:
		return fmt.Errorf("gateway answered %s", resp.Status)
	}
}
