package ticket

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Mode is what a ticket lets its holder do in the session.
type Mode string

const (
	// Control lets the holder send input (keyboard, mouse, requests).
	Control Mode = "control"
	// View lets the holder watch only; the connector drops input.
	View Mode = "view"
)

// Limits of the wire format. Callers reading a token from a header, cookie
// or query parameter may use MaxTokenLen to bound what they read.
const (
	// MaxTokenLen is the longest string [Verify] will look at. It is above
	// the longest token [Sign] can produce (1,425 bytes).
	MaxTokenLen = 2 << 10
	// MaxFieldLen is the longest Session, Connector, User or Nonce, in bytes.
	MaxFieldLen = 255
)

// Claims are what a ticket says. All string fields are required, at most
// [MaxFieldLen] bytes of UTF-8, with no control, format or line-separator
// characters (so they are safe to put in a log line or a page).
type Claims struct {
	Session   string // session ID, e.g. "s-7f3a"
	Connector string // connector name, e.g. "console"
	User      string // who the gateway issued the ticket to
	Mode      Mode
	// Expires is when the ticket stops being valid. It travels as whole
	// Unix seconds: Sign truncates it down and Verify returns it in UTC.
	Expires time.Time
	// Nonce identifies this ticket so a connector's [ReplayGuard] can refuse
	// it a second time. Sign fills a random one when it is empty.
	Nonce string
}

// Errors returned by [Verify], [Check] and [ReplayGuard.Use], matchable with
// errors.Is. Their text, including any detail wrapped around them, is fixed
// or derived from lengths and times only, never from the token's bytes or
// the key, so it is safe to show to the peer that presented the ticket.
var (
	ErrMissing        = errors.New("ticket missing")
	ErrMalformed      = errors.New("ticket malformed")
	ErrForged         = errors.New("ticket signature invalid")
	ErrExpired        = errors.New("ticket expired")
	ErrWrongSession   = errors.New("ticket not valid for this session")
	ErrWrongConnector = errors.New("ticket not valid for this connector")
	// ErrNoKey means the zero Key was used: the ticket key was never
	// configured. It is a server fault, not the peer's.
	ErrNoKey = errors.New("ticket key not configured")
)

const (
	version  = "v1."
	macLabel = "airlock ticket\n"

	modeControl byte = 1
	modeView    byte = 2

	macLen    = sha256.Size
	macB64Len = 43 // base64.RawURLEncoding.EncodedLen(macLen)

	// maxPayload is the longest P: four str fields, mode and expiry.
	maxPayload = 4*(1+MaxFieldLen) + 1 + 8
)

// macLabelBytes is macLabel converted once, not per MAC.
var macLabelBytes = []byte(macLabel)

// b64 is strict so that each payload and MAC has exactly one encoding:
// non-zero padding bits are refused rather than silently dropped.
var b64 = base64.RawURLEncoding.Strict()

// Sign returns the token for c. It fills c.Nonce when empty and refuses
// claims the format cannot carry or Verify would refuse: an empty or
// oversized field, a field with control characters, an unknown mode, or an
// expiry that is zero or not after 1970.
func Sign(k Key, c Claims) (string, error) {
	if k == (Key{}) {
		return "", fmt.Errorf("sign ticket: %w", ErrNoKey)
	}
	if c.Nonce == "" {
		// 128 random bits in base32; rand.Text cannot fail.
		c.Nonce = rand.Text()
	}
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("sign ticket: %w", err)
	}

	var pbuf [maxPayload]byte
	p := pbuf[:0]
	p = appendStr(p, c.Nonce)
	p = append(p, modeByte(c.Mode))
	p = binary.BigEndian.AppendUint64(p, uint64(c.Expires.Unix()))
	p = appendStr(p, c.Session)
	p = appendStr(p, c.Connector)
	p = appendStr(p, c.User)

	signedLen := len(version) + b64.EncodedLen(len(p))
	tok := make([]byte, 0, signedLen+1+macB64Len)
	tok = append(tok, version...)
	tok = b64.AppendEncode(tok, p)
	var mac [macLen]byte
	sum(k, tok, &mac)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, mac[:])
	return string(tok), nil
}

// Verify checks token's format, signature and expiry against now, and
// returns its claims. It does not check which session or connector the
// ticket is for (see [Check]) or whether it was used before (see
// [ReplayGuard]). Errors wrap one of [ErrMissing], [ErrMalformed],
// [ErrForged], [ErrExpired] or [ErrNoKey]. Verify never panics, whatever
// token holds.
func Verify(k Key, token string, now time.Time) (Claims, error) {
	if k == (Key{}) {
		return Claims{}, fmt.Errorf("verify ticket: %w", ErrNoKey)
	}
	switch {
	case token == "":
		return Claims{}, ErrMissing
	case len(token) > MaxTokenLen:
		return Claims{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(token), MaxTokenLen)
	case !strings.HasPrefix(token, version):
		return Claims{}, fmt.Errorf("%w: unknown version prefix", ErrMalformed)
	}
	payloadText, macText, ok := strings.Cut(token[len(version):], ".")
	if !ok || payloadText == "" || strings.IndexByte(macText, '.') >= 0 {
		return Claims{}, fmt.Errorf("%w: want version, payload and MAC separated by dots", ErrMalformed)
	}
	if len(macText) != macB64Len {
		return Claims{}, fmt.Errorf("%w: MAC is %d characters, want %d", ErrMalformed, len(macText), macB64Len)
	}
	// One copy of the token as bytes serves the decoders and the MAC.
	tb := []byte(token)
	signed := tb[:len(version)+len(payloadText)]
	payloadBytes := signed[len(version):]
	var got [macLen]byte
	if n, err := b64.Decode(got[:], tb[len(signed)+1:]); err != nil || n != macLen {
		return Claims{}, fmt.Errorf("%w: MAC is not base64url", ErrMalformed)
	}
	var want [macLen]byte
	sum(k, signed, &want)
	// Constant time, so response timing does not reveal how many leading
	// bytes of a guessed MAC were right.
	if !hmac.Equal(got[:], want[:]) {
		return Claims{}, ErrForged
	}

	// Only now, with the MAC proven ours, parse the payload.
	var pbuf [maxPayload]byte
	if b64.DecodedLen(len(payloadText)) > len(pbuf) {
		return Claims{}, fmt.Errorf("%w: payload too long", ErrMalformed)
	}
	n, err := b64.Decode(pbuf[:], payloadBytes)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	c, err := decodePayload(pbuf[:n])
	if err != nil {
		// A valid MAC over a bad payload means a key holder signed it with
		// a different encoder; still the peer's problem to report.
		return Claims{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !now.Before(c.Expires) {
		return Claims{}, fmt.Errorf("%w: at %s, %s ago", ErrExpired,
			c.Expires.Format(time.RFC3339), now.Sub(c.Expires).Truncate(time.Second))
	}
	return c, nil
}

// Check is [Verify] plus a check that the ticket names this session and
// connector; a connector calls it with its own session ID and name.
// Besides Verify's errors it returns [ErrWrongSession] or
// [ErrWrongConnector], which do not say which session or connector the
// ticket was for.
func Check(k Key, token, session, connector string, now time.Time) (Claims, error) {
	c, err := Verify(k, token, now)
	if err != nil {
		return Claims{}, err
	}
	if c.Session != session {
		return Claims{}, ErrWrongSession
	}
	if c.Connector != connector {
		return Claims{}, ErrWrongConnector
	}
	return c, nil
}

// sum writes the MAC of the signed part of a token into out.
func sum(k Key, signed []byte, out *[macLen]byte) {
	m := hmac.New(sha256.New, k[:])
	m.Write(macLabelBytes)
	m.Write(signed)
	m.Sum(out[:0])
}

func modeByte(m Mode) byte {
	switch m {
	case Control:
		return modeControl
	case View:
		return modeView
	}
	return 0
}

func appendStr(p []byte, s string) []byte {
	p = append(p, byte(len(s)))
	return append(p, s...)
}

// validate checks everything the wire format and Verify require.
func (c *Claims) validate() error {
	if modeByte(c.Mode) == 0 {
		return fmt.Errorf("mode %q is not %q or %q", c.Mode, Control, View)
	}
	if c.Expires.IsZero() {
		return errors.New("expiry not set")
	}
	if c.Expires.Unix() <= 0 {
		return errors.New("expiry not after 1970")
	}
	for _, f := range [...]struct{ name, v string }{
		{"session", c.Session},
		{"connector", c.Connector},
		{"user", c.User},
		{"nonce", c.Nonce},
	} {
		if err := checkField(f.v); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return nil
}

// checkField enforces the str rule of the wire format. The error never
// quotes the value, which may be attacker-supplied.
func checkField(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxFieldLen:
		return fmt.Errorf("%d bytes, limit %d", len(s), MaxFieldLen)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		// Cc could forge log lines or terminal escapes; Cf includes the
		// bidi overrides that make a user name display as another; Zl/Zp
		// break lines like \n does.
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return fmt.Errorf("control or format character at byte %d", i)
		}
	}
	return nil
}

// decodePayload parses P. Every read is bounds-checked; it never panics.
func decodePayload(p []byte) (Claims, error) {
	var c Claims
	var err error
	if c.Nonce, p, err = readStr(p, "nonce"); err != nil {
		return Claims{}, err
	}
	if len(p) < 1+8 {
		return Claims{}, errors.New("payload truncated in mode or expiry")
	}
	switch p[0] {
	case modeControl:
		c.Mode = Control
	case modeView:
		c.Mode = View
	default:
		return Claims{}, errors.New("unknown mode")
	}
	secs := int64(binary.BigEndian.Uint64(p[1:9]))
	if secs <= 0 {
		return Claims{}, errors.New("expiry not after 1970")
	}
	c.Expires = time.Unix(secs, 0).UTC()
	p = p[9:]
	if c.Session, p, err = readStr(p, "session"); err != nil {
		return Claims{}, err
	}
	if c.Connector, p, err = readStr(p, "connector"); err != nil {
		return Claims{}, err
	}
	if c.User, p, err = readStr(p, "user"); err != nil {
		return Claims{}, err
	}
	if len(p) != 0 {
		return Claims{}, fmt.Errorf("%d trailing bytes", len(p))
	}
	return c, nil
}

func readStr(p []byte, name string) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, fmt.Errorf("payload truncated before %s", name)
	}
	n := int(p[0])
	if len(p)-1 < n {
		return "", nil, fmt.Errorf("payload truncated in %s", name)
	}
	s := string(p[1 : 1+n])
	if err := checkField(s); err != nil {
		return "", nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, p[1+n:], nil
}
