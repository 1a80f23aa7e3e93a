// Package totp is the second factor: time-based one-time passwords (RFC
// 6238: HMAC-SHA1, 6 digits, 30 s steps, as every authenticator app does)
// through github.com/pquerna/otp, the QR code an app scans (PNG, made on
// the server), recovery codes, and sealing the shared secret for the
// store. It decides whether a code fits a secret and at which time step;
// remembering used steps (replays) and counting wrong codes is the
// caller's, through the store, so that every gateway agrees.
package totp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	ptotp "github.com/pquerna/otp/totp"
)

// Period is the length of a time step.
const Period = 30 * time.Second

// Skew is how many steps either side of now a code may be for: phones'
// clocks drift and people type slowly.
const Skew = 1

// Key is a freshly generated secret and what enrolment shows of it.
type Key struct {
	// Secret is the base32 shared secret (what a person types into an app
	// that cannot scan).
	Secret string
	// URL is the otpauth:// URL the QR code holds.
	URL string
}

// Generate makes a new 160-bit secret for user, labelled with issuer in
// the user's app.
func Generate(issuer, user string) (Key, error) {
	k, err := ptotp.Generate(ptotp.GenerateOpts{Issuer: issuer, AccountName: user, SecretSize: 20})
	if err != nil {
		return Key{}, fmt.Errorf("totp: generate: %w", err)
	}
	return Key{Secret: k.Secret(), URL: k.URL()}, nil
}

// URL is the otpauth:// URL for an existing secret.
func URL(issuer, user, secret string) (string, error) {
	raw, err := decodeSecret(secret)
	if err != nil {
		return "", err
	}
	k, err := ptotp.Generate(ptotp.GenerateOpts{Issuer: issuer, AccountName: user, Secret: raw})
	if err != nil {
		return "", fmt.Errorf("totp: url: %w", err)
	}
	return k.URL(), nil
}

// QRPNG renders an otpauth URL as a PNG QR code, size pixels square.
func QRPNG(otpauthURL string, size int) ([]byte, error) {
	k, err := otp.NewKeyFromURL(otpauthURL)
	if err != nil {
		return nil, fmt.Errorf("totp: qr: %w", err)
	}
	img, err := k.Image(size, size)
	if err != nil {
		return nil, fmt.Errorf("totp: qr: %w", err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, fmt.Errorf("totp: qr: %w", err)
	}
	return b.Bytes(), nil
}

// Step is the time step t falls in.
func Step(t time.Time) int64 { return t.Unix() / int64(Period/time.Second) }

// Code is the code for secret at step (tests and the CLI's tests use it).
func Code(secret string, step int64) (string, error) {
	c, err := ptotp.GenerateCodeCustom(secret, time.Unix(step*int64(Period/time.Second), 0), ptotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", fmt.Errorf("totp: code: %w", err)
	}
	return c, nil
}

// Check returns the step, within Skew of now and after after, whose code
// is code; ok false if there is none. Steps at or before after were used
// already: a code for one of them is refused here, and the caller must
// still record the step atomically (two requests may race).
func Check(secret, code string, now time.Time, after int64) (step int64, ok bool, err error) {
	c, err := ParseCode(code)
	if err != nil {
		return 0, false, nil
	}
	cur := Step(now)
	for s := cur - Skew; s <= cur+Skew; s++ {
		want, err := Code(secret, s)
		if err != nil {
			return 0, false, err
		}
		// Compare every candidate, matched or not, in constant time.
		if subtle.ConstantTimeCompare([]byte(want), []byte(c)) == 1 && s > after && !ok {
			step, ok = s, true
		}
	}
	return step, ok, nil
}

// ErrBadCode: not six digits.
var ErrBadCode = errors.New("a code is six digits")

// ParseCode accepts six digits, allowing spaces and a dash a person may
// type between groups ("123 456").
func ParseCode(s string) (string, error) {
	if len(s) > 16 {
		return "", ErrBadCode
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-':
		default:
			return "", ErrBadCode
		}
	}
	if b.Len() != 6 {
		return "", ErrBadCode
	}
	return b.String(), nil
}

// recoveryAlphabet is 32 lower-case letters and digits without i, l and o,
// which people misread as 1 and 0.
const recoveryAlphabet = "abcdefghjkmnpqrstuvwxyz234567890"

var recoveryEnc = base32.NewEncoding(recoveryAlphabet).WithPadding(base32.NoPadding)

// RecoveryCount is how many recovery codes enrolment makes.
const RecoveryCount = 10

// NewRecoveryCodes makes n codes of 50 random bits, "xxxxx-xxxxx". They
// are strong enough that a fast hash (SHA-256) is safe to store.
func NewRecoveryCodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		b := make([]byte, 7)
		rand.Read(b)
		s := recoveryEnc.EncodeToString(b)[:10]
		out[i] = s[:5] + "-" + s[5:]
	}
	return out
}

// ParseRecovery normalises a typed recovery code (case, spaces, the
// dash); ok false if it cannot be one.
func ParseRecovery(s string) (string, bool) {
	if len(s) > 32 {
		return "", false
	}
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r == ' ' || r == '-':
		case r < 0x80 && strings.ContainsRune(recoveryAlphabet, r):
			b.WriteRune(r)
		default:
			return "", false
		}
	}
	if b.Len() != 10 {
		return "", false
	}
	return b.String()[:5] + "-" + b.String()[5:], true
}

// RecoveryHash is what the store keeps of a (parsed) recovery code.
func RecoveryHash(user, code string) []byte {
	h := sha256.Sum256([]byte("airlock totp recovery\x00" + user + "\x00" + code))
	return h[:]
}

func decodeSecret(secret string) ([]byte, error) {
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(secret))
	if err != nil {
		return nil, fmt.Errorf("totp: secret: %w", err)
	}
	return raw, nil
}

// Seal encrypts secret for the store with key (AES-256-GCM), bound to
// user: a sealed secret copied to another user's row does not open.
func Seal(key [32]byte, user, secret string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, []byte(secret), []byte("airlock totp\x00"+user)), nil
}

// Open decrypts what Seal made for user.
func Open(key [32]byte, user string, sealed []byte) (string, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return "", err
	}
	if len(sealed) < aead.NonceSize() {
		return "", errors.New("totp: sealed secret too short")
	}
	p, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte("airlock totp\x00"+user))
	if err != nil {
		return "", fmt.Errorf("totp: open sealed secret of %s: %w", user, err)
	}
	return string(p), nil
}

func newAEAD(key [32]byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("totp: %w", err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("totp: %w", err)
	}
	return a, nil
}
