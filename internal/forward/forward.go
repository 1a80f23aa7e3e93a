// Package forward is the node's side of `airlock forward`: it registers a
// forward with the gateway, keeps one outbound tunnel to it (a WebSocket
// carrying yamux streams, one per connection the gateway opens towards the
// app) and pipes each stream to the app's UNIX socket or loopback port.
// The node listens on nothing: it only dials out.
//
// The tunnel comes back by itself when the gateway restarts or the network
// blinks, with backoff, under the same forward ID and secret, so the URL
// stays the same. It ends for good when the gateway says the forward is
// gone (stopped from the portal or the API): Serve returns ErrStopped.
package forward

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// SecretHeader carries the forward's secret on the tunnel's handshake (the
// gateway's ForwardSecretHeader).
const SecretHeader = "Airlock-Forward-Secret"

// ErrStopped is Serve's answer when the gateway has ended the forward.
var ErrStopped = errors.New("the forward was stopped on the gateway")

// Client talks to one gateway as one user.
type Client struct {
	// Gateway is the gateway's https:// URL.
	Gateway string
	// Token is the user's API token.
	Token string
	// TLS verifies the gateway (nil: the system's roots).
	TLS *tls.Config
	Log *slog.Logger
}

// Forward is a registered forward.
type Forward struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

func (c *Client) http() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: c.TLS, Proxy: http.ProxyFromEnvironment}}
}

func (c *Client) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

// apiError is the gateway's error answer.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("gateway: %s (%d %s)", e.Message, e.Status, e.Code)
	}
	return fmt.Sprintf("gateway: HTTP %d", e.Status)
}

func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error apiError `json:"error"`
	}
	json.Unmarshal(b, &body)
	e := &body.Error
	e.Status = resp.StatusCode
	return e
}

// Create registers a forward named name; node says where it runs (for
// the portal).
func (c *Client) Create(ctx context.Context, name, node string) (*Forward, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "node": node})
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(c.Gateway, "/")+"/api/v1/forwards", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("register the forward: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("register the forward: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("register the forward: %w", readAPIError(resp))
	}
	var f Forward
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&f); err != nil || f.ID == "" || f.Secret == "" {
		return nil, fmt.Errorf("register the forward: the gateway's answer is not a forward (%v)", err)
	}
	return &f, nil
}

// Stop ends forward f on the gateway (the URL stops working).
func (c *Client) Stop(ctx context.Context, f *Forward) error {
	req, err := http.NewRequestWithContext(ctx, "DELETE", strings.TrimSuffix(c.Gateway, "/")+"/api/v1/sessions/"+f.ID, nil)
	if err != nil {
		return fmt.Errorf("stop the forward: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("stop the forward: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("stop the forward: %w", readAPIError(resp))
	}
	return nil
}

// Backoff bounds the wait between two dials of the tunnel.
type Backoff struct {
	Min, Max time.Duration
}

// Serve keeps f's tunnel up and pipes its streams to target ("unix:PATH"
// or "HOST:PORT") until ctx ends (nil), the gateway ends the forward
// (ErrStopped), or the gateway refuses the tunnel for good (the token
// revoked: that error). up, if set, is called each time the tunnel is
// (re)connected.
func (c *Client) Serve(ctx context.Context, f *Forward, target string, b Backoff, up func()) error {
	if b.Min <= 0 {
		b.Min = 200 * time.Millisecond
	}
	if b.Max < b.Min {
		b.Max = max(b.Min, 30*time.Second)
	}
	wait := b.Min
	for {
		start := time.Now()
		err := c.once(ctx, f, target, up)
		if ctx.Err() != nil {
			return nil
		}
		var ae *apiError
		if errors.As(err, &ae) {
			switch ae.Status {
			case http.StatusGone, http.StatusNotFound:
				return ErrStopped
			case http.StatusUnauthorized, http.StatusForbidden:
				return fmt.Errorf("the gateway refused the tunnel: %w", err)
			}
		}
		if time.Since(start) > time.Minute {
			wait = b.Min // it was up a while: this is a new blink
		}
		// Jitter, so that many nodes do not all dial a restarted gateway
		// in the same instant.
		d := wait/2 + rand.N(wait/2+1)
		c.log().Warn("tunnel down; dialling again", "forward", f.ID, "in", d.Round(time.Millisecond), "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		wait = min(wait*2, b.Max)
	}
}

// once dials the tunnel and serves it until it breaks.
func (c *Client) once(ctx context.Context, f *Forward, target string, up func()) error {
	u := strings.TrimSuffix(c.Gateway, "/") + "/api/v1/forwards/" + f.ID + "/tunnel"
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLS, Proxy: http.ProxyFromEnvironment}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.Token}, SecretHeader: {f.Secret}},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			defer resp.Body.Close()
			return readAPIError(resp)
		}
		return fmt.Errorf("dial the tunnel: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	nc := Coalesce(websocket.NetConn(sctx, ws, websocket.MessageBinary))
	mux, err := yamux.Server(nc, MuxConfig())
	if err != nil {
		ws.CloseNow()
		return fmt.Errorf("tunnel multiplexer: %w", err)
	}
	defer mux.Close()
	go func() {
		<-sctx.Done()
		mux.Close()
	}()
	c.log().Info("tunnel up", "forward", f.ID)
	if up != nil {
		up()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			return fmt.Errorf("tunnel: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipe(sctx, st, target, c.log())
		}()
	}
}

// MuxConfig is yamux's configuration for both ends (the gateway's too):
// keep-alives find a dead tunnel; yamux's own log goes nowhere, its
// errors come back as errors.
func MuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 64
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}

// pipe joins one stream to a new connection to the app.
func pipe(ctx context.Context, st net.Conn, target string, log *slog.Logger) {
	defer st.Close()
	network, addr := "tcp", target
	if p, ok := strings.CutPrefix(target, "unix:"); ok {
		network, addr = "unix", p
	}
	app, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return // the gateway sees the stream close: 502
	}
	defer app.Close()
	// A loopback port, or a socket path others may write to, may be
	// another user's (peeruid.go).
	if err := checkPeer(app); err != nil {
		log.Warn("refused: the app's listener", "target", target, "error", err)
		return
	}
	// When either side is done, both are: the gateway's HTTP client and
	// its WebSocket proxy never half-close, they close, and a stream the
	// gateway gave up on (a visitor who left an event stream) must not
	// hold the app's connection open.
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(app, st)
	go cp(st, app)
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// ParseTarget checks an app address: "unix:/abs/path", or a loopback
// "127.0.0.1:PORT" / "[::1]:PORT" / "localhost:PORT" (a forward publishes an
// app on this node, not another host).
func ParseTarget(s string) (string, error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("--to %q: want unix:/absolute/path", s)
		}
		return s, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--to %q: want unix:PATH or 127.0.0.1:PORT: %w", s, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("--to %q: only a loopback address (127.0.0.1, ::1, localhost)", s)
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != port {
		return "", fmt.Errorf("--to %q: port %q is not 1-65535", s, port)
	}
	return s, nil
}
