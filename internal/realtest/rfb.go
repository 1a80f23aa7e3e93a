package realtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// PinnedTLS trusts exactly the certificate whose SHA-256 is sha (hex), as
// the gateway pins a session's self-signed certificate.
func PinnedTLS(sha string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if hex.EncodeToString(sum[:]) != sha {
				return fmt.Errorf("certificate %x is not the pinned %s", sum, sha)
			}
			return nil
		},
	}
}

// DialWS opens a WebSocket to a vnc connector at endpoint (host:port over
// TLS pinned to sha, or unix:/path in plain) with the ticket as a query
// parameter. On refusal it returns the HTTP response.
func DialWS(ctx context.Context, endpoint, sha, ticket string) (net.Conn, *http.Response, error) {
	tr := &http.Transport{TLSClientConfig: PinnedTLS(sha)}
	u := "wss://" + endpoint + "/"
	if p, ok := cutPrefix(endpoint, "unix:"); ok {
		tr = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p)
		}}
		u = "ws://session/"
	}
	if ticket != "" {
		u += "?ticket=" + url.QueryEscape(ticket)
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr, Timeout: 10 * time.Second},
		Subprotocols: []string{"binary"},
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(64 << 20)
	return websocket.NetConn(context.Background(), c, websocket.MessageBinary), resp, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

// RFB is a minimal RFB 3.8 client: security None, raw encoding, 32 bpp.
type RFB struct {
	c     net.Conn
	W, H  int
	Name  string
	Frame []byte // W*H*4, as the server's pixel format
	Greet string
}

// rfbTimeout bounds one handshake or one update. A full raw screen is a
// few megabytes through TLS, the gateway and a connector; with the whole
// suite running on two shared cores, a first update was seen to take
// over 15 s (TestRecording in CI), so the bound is generous: it is there
// to end a test whose server is gone, not to time anything.
const rfbTimeout = 60 * time.Second

// NewRFB does the handshake over c and asks for a shared session.
func NewRFB(c net.Conn) (*RFB, error) {
	r := &RFB{c: c}
	c.SetDeadline(time.Now().Add(rfbTimeout))
	defer c.SetDeadline(time.Time{})
	ver := make([]byte, 12)
	if _, err := io.ReadFull(c, ver); err != nil {
		return nil, fmt.Errorf("read ProtocolVersion: %w", err)
	}
	r.Greet = string(ver)
	if _, err := c.Write([]byte("RFB 003.008\n")); err != nil {
		return nil, err
	}
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, fmt.Errorf("read security types: %w", err)
	}
	if n[0] == 0 {
		return nil, errors.New("server refused the connection")
	}
	types := make([]byte, n[0])
	io.ReadFull(c, types)
	if !bytes.Contains(types, []byte{1}) {
		return nil, fmt.Errorf("server offers security types %v, not None", types)
	}
	c.Write([]byte{1})
	var res [4]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return nil, fmt.Errorf("read SecurityResult: %w", err)
	}
	if binary.BigEndian.Uint32(res[:]) != 0 {
		return nil, errors.New("security handshake failed")
	}
	c.Write([]byte{1}) // ClientInit: shared
	var si [24]byte
	if _, err := io.ReadFull(c, si[:]); err != nil {
		return nil, fmt.Errorf("read ServerInit: %w", err)
	}
	r.W, r.H = int(binary.BigEndian.Uint16(si[0:])), int(binary.BigEndian.Uint16(si[2:]))
	name := make([]byte, binary.BigEndian.Uint32(si[20:]))
	io.ReadFull(c, name)
	r.Name = string(name)
	// 32 bpp true colour, little endian, whatever the server proposed.
	pf := []byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}
	c.Write(pf)
	c.Write([]byte{2, 0, 0, 1, 0, 0, 0, 0}) // SetEncodings: Raw
	r.Frame = make([]byte, r.W*r.H*4)
	return r, nil
}

// encZRLE is RFB's ZRLE encoding: zlib-compressed rectangles, each
// prefixed with its length.
const encZRLE = 16

// AskZRLE asks the server for ZRLE rectangles (compressed, as a browser's
// viewer gets them) before raw ones. They are read and skipped, not drawn:
// for a benchmark that moves realistic bytes, not for checking pixels.
func (r *RFB) AskZRLE() error {
	_, err := r.c.Write([]byte{2, 0, 0, 2, 0, 0, 0, encZRLE, 0, 0, 0, 0})
	return err
}

// Update asks for a frame and reads messages until a FramebufferUpdate has
// been applied.
func (r *RFB) Update(incremental bool) error {
	inc := byte(0)
	if incremental {
		inc = 1
	}
	req := []byte{3, inc, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], uint16(r.W))
	binary.BigEndian.PutUint16(req[8:], uint16(r.H))
	if _, err := r.c.Write(req); err != nil {
		return err
	}
	r.c.SetReadDeadline(time.Now().Add(rfbTimeout))
	defer r.c.SetReadDeadline(time.Time{})
	for {
		var t [1]byte
		if _, err := io.ReadFull(r.c, t[:]); err != nil {
			return fmt.Errorf("read server message: %w", err)
		}
		switch t[0] {
		case 0:
			return r.readUpdate()
		case 2: // Bell
		case 3: // ServerCutText
			var h [7]byte
			io.ReadFull(r.c, h[:])
			io.CopyN(io.Discard, r.c, int64(binary.BigEndian.Uint32(h[3:])))
		default:
			return fmt.Errorf("unexpected server message %d", t[0])
		}
	}
}

func (r *RFB) readUpdate() error {
	var h [3]byte
	if _, err := io.ReadFull(r.c, h[:]); err != nil {
		return err
	}
	for range int(binary.BigEndian.Uint16(h[1:])) {
		var rh [12]byte
		if _, err := io.ReadFull(r.c, rh[:]); err != nil {
			return err
		}
		x, y := int(binary.BigEndian.Uint16(rh[0:])), int(binary.BigEndian.Uint16(rh[2:]))
		w, hh := int(binary.BigEndian.Uint16(rh[4:])), int(binary.BigEndian.Uint16(rh[6:]))
		enc := int32(binary.BigEndian.Uint32(rh[8:]))
		if enc == encZRLE {
			// Length-prefixed: skipped, not drawn (see AskZRLE).
			var n [4]byte
			if _, err := io.ReadFull(r.c, n[:]); err != nil {
				return err
			}
			if _, err := io.CopyN(io.Discard, r.c, int64(binary.BigEndian.Uint32(n[:]))); err != nil {
				return err
			}
			continue
		}
		if enc != 0 {
			return fmt.Errorf("unexpected encoding %d", enc)
		}
		row := make([]byte, w*4)
		for j := range hh {
			if _, err := io.ReadFull(r.c, row); err != nil {
				return err
			}
			if y+j < r.H && x+w <= r.W {
				copy(r.Frame[((y+j)*r.W+x)*4:], row)
			}
		}
	}
	return nil
}

// Key presses and releases keysym.
func (r *RFB) Key(keysym uint32) error {
	for _, down := range []byte{1, 0} {
		m := []byte{4, down, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(m[4:], keysym)
		if _, err := r.c.Write(m); err != nil {
			return err
		}
	}
	return nil
}

// Chord presses keysyms in order and releases them in reverse: a key
// with modifiers held (Control_L 0xffe3, then 'w').
func (r *RFB) Chord(keysyms ...uint32) error {
	send := func(ks uint32, down byte) error {
		m := []byte{4, down, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(m[4:], ks)
		_, err := r.c.Write(m)
		return err
	}
	for _, ks := range keysyms {
		if err := send(ks, 1); err != nil {
			return err
		}
	}
	for i := len(keysyms) - 1; i >= 0; i-- {
		if err := send(keysyms[i], 0); err != nil {
			return err
		}
	}
	return nil
}

// Type types ASCII text; '\n' is Return.
func (r *RFB) Type(s string) error {
	for _, ch := range s {
		ks := uint32(ch)
		if ch == '\n' {
			ks = 0xff0d
		}
		if err := r.Key(ks); err != nil {
			return err
		}
	}
	return nil
}

// Pointer moves the pointer to x, y with no button pressed.
func (r *RFB) Pointer(x, y int) error {
	m := []byte{5, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(m[2:], uint16(x))
	binary.BigEndian.PutUint16(m[4:], uint16(y))
	_, err := r.c.Write(m)
	return err
}

// Click presses and releases the left button at x, y.
func (r *RFB) Click(x, y int) error {
	for _, mask := range []byte{1, 0} {
		m := []byte{5, mask, 0, 0, 0, 0}
		binary.BigEndian.PutUint16(m[2:], uint16(x))
		binary.BigEndian.PutUint16(m[4:], uint16(y))
		if _, err := r.c.Write(m); err != nil {
			return err
		}
	}
	return nil
}

// Distinct counts the distinct pixel values in the frame: 1 means blank.
func (r *RFB) Distinct() int {
	seen := map[uint32]bool{}
	for i := 0; i+4 <= len(r.Frame); i += 4 {
		seen[binary.LittleEndian.Uint32(r.Frame[i:])] = true
		if len(seen) > 16 {
			break
		}
	}
	return len(seen)
}

// Close closes the connection.
func (r *RFB) Close() error { return r.c.Close() }
