package ticket_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

func TestMain(m *testing.M) {
	os.Exit(realtest.LeakCheckMain(m, "airlock/internal/ticket"))
}

// t0 is the fixed "now" of most tests.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func testKey(seed byte) ticket.Key {
	var k ticket.Key
	for i := range k {
		k[i] = seed + byte(i)*37
	}
	return k
}

var (
	keyA = testKey(1)
	keyB = testKey(2)
)

func baseClaims() ticket.Claims {
	return ticket.Claims{
		Session:   "s-7f3a",
		Connector: "console",
		User:      "alice",
		Mode:      ticket.Control,
		Expires:   t0.Add(5 * time.Minute),
		Nonce:     "n-0001",
	}
}

func with(f func(*ticket.Claims)) ticket.Claims {
	c := baseClaims()
	f(&c)
	return c
}

// sign is Sign for table construction, where a failure is a bug in the
// table itself.
func sign(k ticket.Key, c ticket.Claims) string {
	tok, err := ticket.Sign(k, c)
	if err != nil {
		panic(err)
	}
	return tok
}

var b64 = base64.RawURLEncoding

// specSigned builds a token from a payload text exactly as doc.go
// specifies, independently of Sign, so tests check the spec and can sign
// payloads Sign would never produce.
func specSigned(k ticket.Key, payloadText string) string {
	signed := "v1." + payloadText
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("airlock ticket\n" + signed))
	return signed + "." + b64.EncodeToString(m.Sum(nil))
}

func specToken(k ticket.Key, payload []byte) string {
	return specSigned(k, b64.EncodeToString(payload))
}

// specPayload encodes c as doc.go specifies, without validating it.
func specPayload(c ticket.Claims) []byte {
	str := func(p []byte, s string) []byte { return append(append(p, byte(len(s))), s...) }
	p := str(nil, c.Nonce)
	switch c.Mode {
	case ticket.Control:
		p = append(p, 1)
	case ticket.View:
		p = append(p, 2)
	default:
		p = append(p, 0)
	}
	p = binary.BigEndian.AppendUint64(p, uint64(c.Expires.Unix()))
	p = str(p, c.Session)
	p = str(p, c.Connector)
	return str(p, c.User)
}

// parts splits a well-formed token into decoded payload and MAC.
func parts(tok string) (payload, mac []byte) {
	rest := strings.TrimPrefix(tok, "v1.")
	pt, mt, _ := strings.Cut(rest, ".")
	payload, err1 := b64.DecodeString(pt)
	mac, err2 := b64.DecodeString(mt)
	if err := errors.Join(err1, err2); err != nil {
		panic(err)
	}
	return payload, mac
}

func join(payload, mac []byte) string {
	return "v1." + b64.EncodeToString(payload) + "." + b64.EncodeToString(mac)
}

func equalClaims(a, b ticket.Claims) bool {
	return a.Session == b.Session && a.Connector == b.Connector && a.User == b.User &&
		a.Mode == b.Mode && a.Nonce == b.Nonce && a.Expires.Equal(b.Expires)
}

var sentinels = []error{
	ticket.ErrMissing, ticket.ErrMalformed, ticket.ErrForged, ticket.ErrExpired,
	ticket.ErrWrongSession, ticket.ErrWrongConnector, ticket.ErrNoKey,
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// checkPeerSafe fails if err's text could leak anything to the peer: the
// token's MAC, the key, or raw control bytes copied from input.
func checkPeerSafe(t *testing.T, err error, tok string) {
	t.Helper()
	msg := err.Error()
	if i := strings.LastIndexByte(tok, '.'); i >= 0 && len(tok)-i > 8 && strings.Contains(msg, tok[i+1:]) {
		t.Errorf("error %q contains the token's MAC", msg)
	}
	for _, k := range []ticket.Key{keyA, keyB} {
		if strings.Contains(msg, hex.EncodeToString(k[:])) || strings.Contains(msg, string(k[:])) {
			t.Errorf("error %q contains a key", msg)
		}
	}
	if strings.ContainsFunc(msg, unicode.IsControl) {
		t.Errorf("error %q contains control characters", msg)
	}
}

func TestSignMatchesSpec(t *testing.T) {
	c := baseClaims()
	got := sign(keyA, c)
	want := specToken(keyA, specPayload(c))
	if got != want {
		t.Errorf("Sign = %q\nspec = %q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("x", ticket.MaxFieldLen)
	tests := []struct {
		name string
		c    ticket.Claims
	}{
		{"control", baseClaims()},
		{"view", with(func(c *ticket.Claims) { c.Mode = ticket.View })},
		{"unicode user", with(func(c *ticket.Claims) { c.User = "Zoë 山田 o'brien" })},
		{"fill nonce", with(func(c *ticket.Claims) { c.Nonce = "" })},
		{"expiry truncated", with(func(c *ticket.Claims) { c.Expires = t0.Add(time.Minute + 999*time.Millisecond) })},
		{"expiry in other zone", with(func(c *ticket.Claims) { c.Expires = t0.Add(time.Hour).In(time.FixedZone("X", 5*3600)) })},
		{"longest fields", ticket.Claims{
			Session: long, Connector: long, User: long, Nonce: long,
			Mode: ticket.View, Expires: t0.Add(time.Hour),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ticket.Sign(keyA, tt.c)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if len(tok) > ticket.MaxTokenLen {
				t.Fatalf("token is %d bytes, over MaxTokenLen", len(tok))
			}
			if strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" {
				t.Fatalf("token %q is not URL-safe", tok)
			}
			got, err := ticket.Verify(keyA, tok, t0)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := tt.c
			want.Expires = tt.c.Expires.Truncate(time.Second)
			if want.Nonce == "" {
				if len(got.Nonce) < 16 {
					t.Errorf("filled nonce %q is too short to be random", got.Nonce)
				}
				want.Nonce = got.Nonce
			}
			if !equalClaims(got, want) {
				t.Errorf("Verify = %+v, want %+v", got, want)
			}
			if got.Expires.Location() != time.UTC {
				t.Errorf("Expires location = %v, want UTC", got.Expires.Location())
			}
			if _, err := ticket.Check(keyA, tok, tt.c.Session, tt.c.Connector, t0); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

func TestLongestToken(t *testing.T) {
	long := strings.Repeat("x", ticket.MaxFieldLen)
	tok := sign(keyA, ticket.Claims{Session: long, Connector: long, User: long, Nonce: long, Mode: ticket.View, Expires: t0})
	// doc.go states this number; keep them in step.
	if len(tok) != 1425 {
		t.Errorf("longest token is %d bytes, doc.go says 1425", len(tok))
	}
}

func TestSignFillsDistinctNonces(t *testing.T) {
	c := with(func(c *ticket.Claims) { c.Nonce = "" })
	a, _ := ticket.Verify(keyA, sign(keyA, c), t0)
	b, _ := ticket.Verify(keyA, sign(keyA, c), t0)
	if a.Nonce == b.Nonce {
		t.Errorf("two tickets got the same nonce %q", a.Nonce)
	}
}

func TestSignRejects(t *testing.T) {
	tests := []struct {
		name    string
		key     ticket.Key
		c       ticket.Claims
		wantErr string
	}{
		{"zero key", ticket.Key{}, baseClaims(), "ticket key not configured"},
		{"empty session", keyA, with(func(c *ticket.Claims) { c.Session = "" }), "session: empty"},
		{"empty connector", keyA, with(func(c *ticket.Claims) { c.Connector = "" }), "connector: empty"},
		{"empty user", keyA, with(func(c *ticket.Claims) { c.User = "" }), "user: empty"},
		{"empty mode", keyA, with(func(c *ticket.Claims) { c.Mode = "" }), `mode ""`},
		{"unknown mode", keyA, with(func(c *ticket.Claims) { c.Mode = "admin" }), `mode "admin"`},
		{"zero expiry", keyA, with(func(c *ticket.Claims) { c.Expires = time.Time{} }), "expiry not set"},
		{"expiry before 1970", keyA, with(func(c *ticket.Claims) { c.Expires = time.Unix(-5, 0) }), "expiry not after 1970"},
		{"long session", keyA, with(func(c *ticket.Claims) { c.Session = strings.Repeat("s", 256) }), "session: 256 bytes, limit 255"},
		{"long nonce", keyA, with(func(c *ticket.Claims) { c.Nonce = strings.Repeat("n", 300) }), "nonce: 300 bytes"},
		{"newline in user", keyA, with(func(c *ticket.Claims) { c.User = "bob\nINFO forged" }), "user: control or format character at byte 3"},
		{"escape in user", keyA, with(func(c *ticket.Claims) { c.User = "\x1b[31mbob" }), "user: control or format"},
		{"DEL in connector", keyA, with(func(c *ticket.Claims) { c.Connector = "con\x7f" }), "connector: control"},
		{"C1 control", keyA, with(func(c *ticket.Claims) { c.User = "bob\u0085" }), "user: control"},
		{"bidi override", keyA, with(func(c *ticket.Claims) { c.User = "bob\u202egnp.exe" }), "user: control or format"},
		{"line separator", keyA, with(func(c *ticket.Claims) { c.Session = "s\u2028x" }), "session: control"},
		{"invalid UTF-8", keyA, with(func(c *ticket.Claims) { c.User = "bob\xff" }), "user: not valid UTF-8"},
		{"control in nonce", keyA, with(func(c *ticket.Claims) { c.Nonce = "n\x00" }), "nonce: control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ticket.Sign(tt.key, tt.c)
			if err == nil {
				t.Fatalf("Sign = %q, want error", tok)
			}
			if !strings.HasPrefix(err.Error(), "sign ticket: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want \"sign ticket: ...%s...\"", err, tt.wantErr)
			}
			checkPeerSafe(t, err, "")
		})
	}
}

type verifyCase struct {
	name  string
	key   ticket.Key
	token string
	now   time.Time
	want  error // nil for success
}

// verifyCases is the attacker's table; FuzzVerify seeds from it too.
func verifyCases() []verifyCase {
	c := baseClaims()
	good := sign(keyA, c)
	payload, mac := parts(good)
	pt, mt, _ := strings.Cut(strings.TrimPrefix(good, "v1."), ".")

	// A MAC whose last character has its two unused bits set: the same
	// bytes under lax base64, refused under strict.
	lastBits := mt[:42] + string(b64Alphabet[strings.IndexByte(b64Alphabet, mt[42])|1])

	bad := func(f func(*ticket.Claims)) string { return specToken(keyA, specPayload(with(f))) }
	mut := func(f func([]byte) []byte) string {
		return specToken(keyA, f(append([]byte(nil), payload...)))
	}

	return []verifyCase{
		{"valid", keyA, good, t0, nil},
		{"valid until the last nanosecond", keyA, good, c.Expires.Add(-time.Nanosecond), nil},
		{"valid long ago", keyA, good, time.Unix(1, 0), nil},

		{"expired at expiry", keyA, good, c.Expires, ticket.ErrExpired},
		{"expired after", keyA, good, c.Expires.Add(time.Hour), ticket.ErrExpired},

		{"missing", keyA, "", t0, ticket.ErrMissing},
		{"zero key", ticket.Key{}, good, t0, ticket.ErrNoKey},

		{"other key", keyB, good, t0, ticket.ErrForged},
		{"signed by other key", keyA, sign(keyB, c), t0, ticket.ErrForged},
		{"payload swapped", keyA, "v1." + b64.EncodeToString(specPayload(with(func(c *ticket.Claims) { c.User = "mallory" }))) + "." + mt, t0, ticket.ErrForged},
		{"MAC zeroed", keyA, join(payload, make([]byte, 32)), t0, ticket.ErrForged},
		{"payload truncated keeping MAC", keyA, join(payload[:len(payload)-1], mac), t0, ticket.ErrForged},
		{"payload char changed", keyA, "v1." + pt[:5] + flipChar(pt[5]) + pt[6:] + "." + mt, t0, ticket.ErrForged},
		{"MAC char changed", keyA, "v1." + pt + "." + mt[:10] + flipChar(mt[10]) + mt[11:], t0, ticket.ErrForged},
		{"expired and forged", keyB, good, c.Expires.Add(time.Hour), ticket.ErrForged},

		{"too long", keyA, "v1." + strings.Repeat("A", ticket.MaxTokenLen) + "." + mt, t0, ticket.ErrMalformed},
		{"one over the limit", keyA, "v1." + strings.Repeat("A", ticket.MaxTokenLen-3-1-43+1) + "." + mt, t0, ticket.ErrMalformed},
		{"no version", keyA, pt + "." + mt, t0, ticket.ErrMalformed},
		{"version 2", keyA, "v2." + pt + "." + mt, t0, ticket.ErrMalformed},
		{"upper-case version", keyA, "V1." + pt + "." + mt, t0, ticket.ErrMalformed},
		{"bearer prefix left on", keyA, "Bearer " + good, t0, ticket.ErrMalformed},
		{"leading space", keyA, " " + good, t0, ticket.ErrMalformed},
		{"trailing newline", keyA, good + "\n", t0, ticket.ErrMalformed},
		{"just version", keyA, "v1", t0, ticket.ErrMalformed},
		{"version and dot", keyA, "v1.", t0, ticket.ErrMalformed},
		{"two dots", keyA, "v1..", t0, ticket.ErrMalformed},
		{"empty payload", keyA, "v1.." + mt, t0, ticket.ErrMalformed},
		{"empty payload, spec-signed", keyA, specSigned(keyA, ""), t0, ticket.ErrMalformed},
		{"no MAC", keyA, "v1." + pt, t0, ticket.ErrMalformed},
		{"empty MAC", keyA, "v1." + pt + ".", t0, ticket.ErrMalformed},
		{"short MAC", keyA, "v1." + pt + "." + mt[:42], t0, ticket.ErrMalformed},
		{"long MAC", keyA, good + "A", t0, ticket.ErrMalformed},
		{"padded MAC", keyA, good + "=", t0, ticket.ErrMalformed},
		{"extra part", keyA, good + ".x", t0, ticket.ErrMalformed},
		{"standard base64 MAC", keyA, "v1." + pt + "." + base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), t0, ticket.ErrMalformed},
		{"MAC with unused bits set", keyA, "v1." + pt + "." + lastBits, t0, ticket.ErrMalformed},
		{"NUL in MAC", keyA, "v1." + pt + "." + mt[:42] + "\x00", t0, ticket.ErrMalformed},

		// Correctly signed, so only the payload parser stands in the way.
		{"payload not base64", keyA, specSigned(keyA, "AAAA*AAA"), t0, ticket.ErrMalformed},
		{"payload padded", keyA, specSigned(keyA, pt+"=="), t0, ticket.ErrMalformed},
		{"payload over the largest", keyA, specToken(keyA, make([]byte, 1100)), t0, ticket.ErrMalformed},
		{"payload truncated", keyA, mut(func(p []byte) []byte { return p[:len(p)-1] }), t0, ticket.ErrMalformed},
		{"payload trailing byte", keyA, mut(func(p []byte) []byte { return append(p, 0) }), t0, ticket.ErrMalformed},
		{"payload only nonce", keyA, mut(func(p []byte) []byte { return p[:1+len(c.Nonce)] }), t0, ticket.ErrMalformed},
		{"payload length past end", keyA, mut(func(p []byte) []byte { p[0] = 200; return p }), t0, ticket.ErrMalformed},
		{"payload one byte", keyA, specToken(keyA, []byte{5}), t0, ticket.ErrMalformed},
		{"mode 0", keyA, mut(func(p []byte) []byte { p[1+len(c.Nonce)] = 0; return p }), t0, ticket.ErrMalformed},
		{"mode 3", keyA, mut(func(p []byte) []byte { p[1+len(c.Nonce)] = 3; return p }), t0, ticket.ErrMalformed},
		{"expiry zero", keyA, bad(func(c *ticket.Claims) { c.Expires = time.Unix(0, 0) }), time.Time{}, ticket.ErrMalformed},
		{"expiry negative", keyA, bad(func(c *ticket.Claims) { c.Expires = time.Unix(-100, 0) }), time.Time{}, ticket.ErrMalformed},
		{"empty session", keyA, bad(func(c *ticket.Claims) { c.Session = "" }), t0, ticket.ErrMalformed},
		{"empty connector", keyA, bad(func(c *ticket.Claims) { c.Connector = "" }), t0, ticket.ErrMalformed},
		{"empty user", keyA, bad(func(c *ticket.Claims) { c.User = "" }), t0, ticket.ErrMalformed},
		{"empty nonce", keyA, bad(func(c *ticket.Claims) { c.Nonce = "" }), t0, ticket.ErrMalformed},
		{"newline in user", keyA, bad(func(c *ticket.Claims) { c.User = "a\nb" }), t0, ticket.ErrMalformed},
		{"bidi in session", keyA, bad(func(c *ticket.Claims) { c.Session = "s\u202e1" }), t0, ticket.ErrMalformed},
		{"invalid UTF-8 user", keyA, bad(func(c *ticket.Claims) { c.User = "\xc3" }), t0, ticket.ErrMalformed},
	}
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// flipChar returns a different base64url character.
func flipChar(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestVerify(t *testing.T) {
	for _, tt := range verifyCases() {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ticket.Verify(tt.key, tt.token, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !equalClaims(got, baseClaims()) {
					t.Errorf("Verify = %+v, want %+v", got, baseClaims())
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if got != (ticket.Claims{}) {
				t.Errorf("Verify returned claims %+v with an error", got)
			}
			checkPeerSafe(t, err, tt.token)
		})
	}
}

// TestVerifyBitFlips flips every bit of a good token's payload and MAC.
func TestVerifyBitFlips(t *testing.T) {
	payload, mac := parts(sign(keyA, baseClaims()))
	flip := func(b []byte, i int) []byte {
		b = append([]byte(nil), b...)
		b[i/8] ^= 1 << (i % 8)
		return b
	}
	for i := range 8 * len(payload) {
		if _, err := ticket.Verify(keyA, join(flip(payload, i), mac), t0); !errors.Is(err, ticket.ErrForged) {
			t.Errorf("payload bit %d flipped: error = %v, want ErrForged", i, err)
		}
	}
	for i := range 8 * len(mac) {
		if _, err := ticket.Verify(keyA, join(payload, flip(mac, i)), t0); !errors.Is(err, ticket.ErrForged) {
			t.Errorf("MAC bit %d flipped: error = %v, want ErrForged", i, err)
		}
	}
}

func TestVerifyErrorText(t *testing.T) {
	c := baseClaims()
	_, err := ticket.Verify(keyA, sign(keyA, c), c.Expires.Add(90*time.Second))
	if want := "ticket expired: at 2026-03-04T05:11:07Z, 1m30s ago"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
	_, err = ticket.Verify(keyA, strings.Repeat("v", 3000), t0)
	if want := "ticket malformed: 3000 bytes, limit 2048"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestCheck(t *testing.T) {
	c := baseClaims()
	good := sign(keyA, c)
	tests := []struct {
		name               string
		session, connector string
		now                time.Time
		want               error
	}{
		{"match", c.Session, c.Connector, t0, nil},
		{"other session", "s-0000", c.Connector, t0, ticket.ErrWrongSession},
		{"session prefix", "s-7f3", c.Connector, t0, ticket.ErrWrongSession},
		{"session case", "S-7F3A", c.Connector, t0, ticket.ErrWrongSession},
		{"other connector", c.Session, "files", t0, ticket.ErrWrongConnector},
		{"both wrong", "s-0000", "files", t0, ticket.ErrWrongSession},
		{"expired beats wrong session", "s-0000", c.Connector, c.Expires, ticket.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ticket.Check(keyA, good, tt.session, tt.connector, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check error = %v, want %v", err, tt.want)
			}
			if err == nil && !equalClaims(got, c) {
				t.Errorf("Check = %+v, want %+v", got, c)
			}
			if err != nil {
				if strings.Contains(err.Error(), c.Session) || strings.Contains(err.Error(), tt.session) {
					t.Errorf("error %q names a session", err)
				}
			}
		})
	}
	if _, err := ticket.Check(keyB, good, c.Session, c.Connector, t0); !errors.Is(err, ticket.ErrForged) {
		t.Errorf("Check with other key: %v, want ErrForged", err)
	}
}

func TestParseKey(t *testing.T) {
	raw := testKey(9)
	hx := hex.EncodeToString(raw[:])
	rawSpaces := bytes.Repeat([]byte{' '}, 32) // raw bytes that look like whitespace
	tests := []struct {
		name    string
		in      []byte
		want    []byte // nil: expect an error containing wantErr
		wantErr string
	}{
		{"raw", raw[:], raw[:], ""},
		{"raw that looks like whitespace", rawSpaces, rawSpaces, ""},
		{"hex", []byte(hx), raw[:], ""},
		{"hex upper", []byte(strings.ToUpper(hx)), raw[:], ""},
		{"hex newline", []byte(hx + "\n"), raw[:], ""},
		{"hex surrounded", []byte(" \t" + hx + "\r\n"), raw[:], ""},
		{"empty", nil, nil, "got 0 bytes (0 after trimming whitespace), want 32 raw bytes or 64 hex digits"},
		{"31 raw", raw[:31], nil, "got 31 bytes"},
		{"33 raw", append(raw[:], 'x'), nil, "got 33 bytes"},
		{"raw plus newline", append(raw[:], '\n'), nil, "got 33 bytes"},
		{"63 hex", []byte(hx[:63]), nil, "got 63 bytes"},
		{"65 hex", []byte(hx + "0"), nil, "got 65 bytes"},
		{"64 non-hex", []byte(strings.Repeat("g", 64)), nil, "not all hex digits"},
		{"hex with inner space", []byte(hx[:32] + " " + hx[32:]), nil, "got 65 bytes"},
		{"zero raw", make([]byte, 32), nil, "all zero bytes"},
		{"zero hex", []byte(strings.Repeat("0", 64)), nil, "all zero bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ticket.ParseKey(tt.in)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("ParseKey: %v", err)
				}
				if !bytes.Equal(k[:], tt.want) {
					t.Errorf("ParseKey = %x, want %x", k[:], tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseKey succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "parse ticket key: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want \"parse ticket key: ...%s...\"", err, tt.wantErr)
			}
			if len(tt.in) > 8 && strings.Contains(err.Error(), string(tt.in[:8])) {
				t.Errorf("error %q echoes the input", err)
			}
		})
	}
	if _, err := ticket.ParseKey(make([]byte, 32)); !errors.Is(err, ticket.ErrNoKey) {
		t.Errorf("zero key error %v, want ErrNoKey", err)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k := testKey(3)
	good := filepath.Join(dir, "key")
	if err := os.WriteFile(good, []byte(hex.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ticket.LoadKey(good)
	if err != nil || got != k {
		t.Fatalf("LoadKey = %x, %v; want %x", got[:], err, k[:])
	}

	missing := filepath.Join(dir, "missing")
	_, err = ticket.LoadKey(missing)
	if want := "load ticket key " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not match fs.ErrNotExist", err)
	}

	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	_, err = ticket.LoadKey(short)
	if want := "load ticket key " + short + ": got 4 bytes (3 after trimming whitespace)"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want prefix %q", err, want)
	}

	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("0"), 1<<20), 0o600)
	_, err = ticket.LoadKey(big)
	if want := "load ticket key " + big + ": file larger than 1024 bytes"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestNewKey(t *testing.T) {
	a, err := ticket.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ticket.NewKey()
	if a == (ticket.Key{}) || a == b {
		t.Errorf("NewKey gave zero or repeated keys")
	}
	tok := sign(a, baseClaims())
	if _, err := ticket.Verify(a, tok, t0); err != nil {
		t.Errorf("Verify with new key: %v", err)
	}
}

// TestRedaction logs and prints a key and a token every way we can think
// of and greps the output for the secrets.
func TestRedaction(t *testing.T) {
	k := testKey(7)
	tok := sign(k, baseClaims())
	_, mt, _ := strings.Cut(strings.TrimPrefix(tok, "v1."), ".")
	tk := ticket.Token(tok)

	var buf bytes.Buffer
	for _, h := range []slog.Handler{
		slog.NewTextHandler(&buf, nil),
		slog.NewJSONHandler(&buf, nil),
	} {
		log := slog.New(h)
		log.Info("key", "key", k, "key_ptr", &k, "token", tk, "token_ptr", &tk)
		log.Info("nested", slog.Group("g", "key", k, "token", tk))
		log.Info("struct", "cfg", struct {
			Key   ticket.Key
			Token ticket.Token
		}{k, tk})
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "% x", "%T"} {
		fmt.Fprintf(&buf, f+"\n", k)
		fmt.Fprintf(&buf, f+"\n", tk)
		fmt.Fprintf(&buf, f+"\n", &k)
		fmt.Fprintf(&buf, f+"\n", struct{ K ticket.Key }{k})
	}
	fmt.Fprintln(&buf, k, tk, k.String(), tk.String())
	j, err := json.Marshal(struct {
		Key   ticket.Key
		Token ticket.Token
		Ptr   *ticket.Token
	}{k, tk, &tk})
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(j)

	out := buf.String()
	t.Logf("output:\n%s", out)
	secrets := map[string]string{
		"key hex":         hex.EncodeToString(k[:]),
		"key HEX":         strings.ToUpper(hex.EncodeToString(k[:])),
		"key spaced hex":  fmt.Sprintf("% x", [32]byte(k))[:20],
		"key decimal":     strings.Trim(fmt.Sprint([32]byte(k)), "[]")[:20],
		"key json array":  strings.Trim(string(mustJSON([32]byte(k))), "[]")[:20],
		"key base64":      base64.StdEncoding.EncodeToString(k[:])[:20],
		"key raw":         string(k[:8]),
		"token MAC":       mt[:10],
		"whole token":     tok,
		"token hex":       hex.EncodeToString([]byte(tok))[:40],
		"token last part": tok[len(tok)-20:],
	}
	for name, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("output contains the %s %q", name, s)
		}
	}
	if !strings.Contains(out, "REDACTED") || !strings.Contains(out, tok[:12]+"...REDACTED") {
		t.Errorf("output lacks the redacted forms")
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestTokenRedactShortOrOdd(t *testing.T) {
	for _, s := range []string{"", "v1.", "hunter2", strings.Repeat("p", 35), "pass\nword-is-long-enough-to-show-a-prefix!"} {
		if got := ticket.Token(s).String(); got != "REDACTED" {
			t.Errorf("Token(%q).String() = %q, want REDACTED", s, got)
		}
	}
}

func TestReplayGuard(t *testing.T) {
	c := baseClaims()

	t.Run("second use refused", func(t *testing.T) {
		var g ticket.ReplayGuard
		if err := g.Use(c, t0); err != nil {
			t.Fatalf("first Use: %v", err)
		}
		if err := g.Use(c, t0.Add(time.Second)); !errors.Is(err, ticket.ErrReplayed) {
			t.Fatalf("second Use: %v, want ErrReplayed", err)
		}
		other := c
		other.Nonce = "n-0002"
		if err := g.Use(other, t0); err != nil {
			t.Fatalf("other nonce: %v", err)
		}
	})

	t.Run("expired claims refused", func(t *testing.T) {
		var g ticket.ReplayGuard
		if err := g.Use(c, c.Expires); !errors.Is(err, ticket.ErrExpired) {
			t.Fatalf("Use at expiry: %v, want ErrExpired", err)
		}
		if g.Len() != 0 {
			t.Errorf("expired claims were remembered")
		}
	})

	t.Run("no nonce refused", func(t *testing.T) {
		var g ticket.ReplayGuard
		if err := g.Use(with(func(c *ticket.Claims) { c.Nonce = "" }), t0); !errors.Is(err, ticket.ErrMalformed) {
			t.Fatalf("Use without nonce: %v, want ErrMalformed", err)
		}
	})

	t.Run("expired entries pruned", func(t *testing.T) {
		var g ticket.ReplayGuard
		for i := range 100 {
			ci := c
			ci.Nonce = fmt.Sprint("short-", i)
			ci.Expires = t0.Add(time.Second)
			if err := g.Use(ci, t0); err != nil {
				t.Fatal(err)
			}
		}
		if g.Len() != 100 {
			t.Fatalf("Len = %d, want 100", g.Len())
		}
		later := t0.Add(2 * time.Hour)
		long := c
		long.Nonce = "long"
		long.Expires = later.Add(time.Hour)
		if err := g.Use(long, later); err != nil {
			t.Fatal(err)
		}
		if g.Len() != 1 {
			t.Errorf("after expiry Len = %d, want 1 (the expired 100 swept)", g.Len())
		}
		// A nonce whose ticket expired may be used by a new ticket.
		reused := long
		reused.Nonce = "short-3"
		if err := g.Use(reused, later); err != nil {
			t.Errorf("reusing an expired nonce: %v", err)
		}
	})

	t.Run("full refuses then recovers", func(t *testing.T) {
		g := ticket.ReplayGuard{Limit: 10}
		for i := range 10 {
			ci := c
			ci.Nonce = fmt.Sprint("n", i)
			ci.Expires = t0.Add(time.Duration(i+1) * time.Second)
			if err := g.Use(ci, t0); err != nil {
				t.Fatal(err)
			}
		}
		extra := c
		extra.Nonce = "extra"
		if err := g.Use(extra, t0); !errors.Is(err, ticket.ErrGuardFull) {
			t.Fatalf("Use when full: %v, want ErrGuardFull", err)
		}
		if g.Len() != 10 {
			t.Fatalf("Len = %d, want 10", g.Len())
		}
		// Replays are still refused as replays, not as "full".
		replay := c
		replay.Nonce = "n9"
		if err := g.Use(replay, t0); !errors.Is(err, ticket.ErrReplayed) {
			t.Errorf("replay when full: %v, want ErrReplayed", err)
		}
		// Once the first three expire, there is room again.
		if err := g.Use(extra, t0.Add(3*time.Second)); err != nil {
			t.Fatalf("Use after some expired: %v", err)
		}
		if g.Len() != 8 {
			t.Errorf("Len = %d, want 8", g.Len())
		}
	})

	t.Run("default limit", func(t *testing.T) {
		var g ticket.ReplayGuard
		ci := c
		for i := range ticket.DefaultReplayLimit {
			ci.Nonce = fmt.Sprint(i)
			if err := g.Use(ci, t0); err != nil {
				t.Fatalf("Use %d: %v", i, err)
			}
		}
		ci.Nonce = "one more"
		if err := g.Use(ci, t0); !errors.Is(err, ticket.ErrGuardFull) {
			t.Fatalf("Use past the default limit: %v, want ErrGuardFull", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var g ticket.ReplayGuard
		const workers, perWorker = 16, 200
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := map[string]int{}
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					ci := c
					// Every nonce is tried by every worker; exactly one may win.
					ci.Nonce = fmt.Sprint("n", i)
					now := t0.Add(time.Duration(w) * time.Millisecond)
					err := g.Use(ci, now)
					switch {
					case err == nil:
						mu.Lock()
						wins[ci.Nonce]++
						mu.Unlock()
					case !errors.Is(err, ticket.ErrReplayed):
						t.Errorf("Use: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if len(wins) != perWorker {
			t.Errorf("%d nonces accepted, want %d", len(wins), perWorker)
		}
		for n, w := range wins {
			if w != 1 {
				t.Errorf("nonce %s accepted %d times", n, w)
			}
		}
	})
}

// checkVerify asserts FuzzVerify's properties for one token.
func checkVerify(t *testing.T, tok string) {
	c, err := ticket.Verify(keyA, tok, t0)
	if err != nil {
		if !isSentinel(err) {
			t.Fatalf("Verify error %v wraps no sentinel", err)
		}
		if c != (ticket.Claims{}) {
			t.Fatalf("Verify returned claims with error %v", err)
		}
		return
	}
	again, err := ticket.Sign(keyA, c)
	if err != nil {
		t.Fatalf("Verify accepted claims Sign refuses: %+v: %v", c, err)
	}
	// The encoding is canonical (fixed layout, strict base64), so an
	// accepted token is exactly what Sign makes of its claims.
	if again != tok {
		t.Fatalf("accepted token is not canonical:\n got %q\nsign %q", tok, again)
	}
	c2, err := ticket.Verify(keyA, again, t0)
	if err != nil || !equalClaims(c, c2) {
		t.Fatalf("re-signed claims verify as %+v, %v; want %+v", c2, err, c)
	}
	if _, err := ticket.Verify(keyB, tok, t0); !errors.Is(err, ticket.ErrForged) {
		t.Fatalf("token verified under another key: %v", err)
	}
	other, _ := ticket.Sign(keyB, c)
	if _, err := ticket.Verify(keyA, other, t0); !errors.Is(err, ticket.ErrForged) {
		t.Fatalf("token signed by another key verified: %v", err)
	}
}

// FuzzVerify feeds Verify arbitrary tokens, and arbitrary payloads with a
// valid MAC (which random tokens would never reach), checking the
// properties in checkVerify.
//
// The table's over-long cases are not seeds: the fuzzer minimizes every
// input that finds new coverage, quadratically in its length, and kilobyte
// seeds stall it for most of a short run. The table tests cover them.
func FuzzVerify(f *testing.F) {
	for _, tc := range verifyCases() {
		if len(tc.token) > 512 {
			continue
		}
		var payload []byte
		if rest, ok := strings.CutPrefix(tc.token, "v1."); ok {
			pt, _, _ := strings.Cut(rest, ".")
			payload, _ = b64.DecodeString(pt)
		}
		f.Add(tc.token, payload)
	}
	f.Add(sign(keyA, with(func(c *ticket.Claims) { c.User = "Zoë"; c.Mode = ticket.View; c.Expires = t0.Add(24 * time.Hour) })), []byte{})
	f.Fuzz(func(t *testing.T, tok string, payload []byte) {
		checkVerify(t, tok)
		checkVerify(t, specToken(keyA, payload))
	})
}

func FuzzParseKey(f *testing.F) {
	raw := testKey(9)
	for _, s := range [][]byte{
		raw[:], []byte(hex.EncodeToString(raw[:])), []byte(hex.EncodeToString(raw[:]) + "\n"),
		nil, raw[:31], make([]byte, 32), []byte(strings.Repeat("0", 64)), []byte(strings.Repeat("g", 64)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ticket.ParseKey(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "parse ticket key: ") {
				t.Fatalf("error %q lacks its prefix", err)
			}
			return
		}
		if k == (ticket.Key{}) {
			t.Fatal("accepted the zero key")
		}
		switch {
		case len(in) == 32:
			if !bytes.Equal(k[:], in) {
				t.Fatalf("raw key changed: %x -> %x", in, k[:])
			}
		default:
			if !strings.EqualFold(hex.EncodeToString(k[:]), string(bytes.TrimSpace(in))) {
				t.Fatalf("hex key %q parsed as %x", in, k[:])
			}
		}
		again, err := ticket.ParseKey([]byte(hex.EncodeToString(k[:])))
		if err != nil || again != k {
			t.Fatalf("hex round trip: %x, %v", again[:], err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	c := with(func(c *ticket.Claims) { c.Nonce = "" })
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ticket.Sign(keyA, c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	tok := sign(keyA, baseClaims())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ticket.Verify(keyA, tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckWithReplayGuard is a connector's whole admission check:
// Check, then Use on a guard that keeps growing, as in production. It
// starts a fresh guard every len(toks) tickets, since each may be used once.
func BenchmarkCheckWithReplayGuard(b *testing.B) {
	toks := make([]string, 1<<12)
	c := with(func(c *ticket.Claims) { c.Expires = t0.Add(time.Hour) })
	for i := range toks {
		c.Nonce = ""
		toks[i] = sign(keyA, c)
	}
	g := new(ticket.ReplayGuard)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == len(toks) {
			i, g = 0, new(ticket.ReplayGuard)
		}
		got, err := ticket.Check(keyA, toks[i], c.Session, c.Connector, t0)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Use(got, t0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
