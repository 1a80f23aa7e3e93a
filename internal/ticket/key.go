package ticket

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
)

// Key is the 32-byte HMAC-SHA256 key shared by the gateway and the
// connectors. Its String, GoString, Format, LogValue and MarshalText methods
// all print "REDACTED", so logging or printing a Key, or a struct holding one
// in an exported field, never shows the secret. fmt cannot call methods on
// unexported struct fields, so keep Keys in exported fields or not in
// printed structs at all.
//
// The zero Key is not a key: [Sign] and [Verify] refuse it with [ErrNoKey],
// so a forgotten configuration fails closed instead of signing with zeros.
type Key [32]byte

const redacted = "REDACTED"

// maxKeyFile bounds how much of a key file [LoadKey] reads, so pointing it
// at /dev/zero or a log file fails fast. 64 hex digits plus generous
// whitespace fit easily.
const maxKeyFile = 1 << 10

// NewKey returns a key from crypto/rand.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate ticket key: %w", err)
	}
	return k, nil
}

// ParseKey accepts exactly 32 raw bytes, or 64 hexadecimal digits with any
// surrounding whitespace (such as a trailing newline in a key file). Raw
// input is checked first and never trimmed, because a raw key may start or
// end with bytes that look like whitespace. An all-zero key is refused.
func ParseKey(b []byte) (Key, error) {
	k, err := parseKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("parse ticket key: %w", err)
	}
	return k, nil
}

func parseKey(b []byte) (Key, error) {
	var k Key
	if len(b) == len(k) {
		copy(k[:], b)
	} else {
		t := bytes.TrimSpace(b)
		if len(t) != hex.EncodedLen(len(k)) {
			// Report the length only: the input may be a mistyped key.
			return Key{}, fmt.Errorf("got %d bytes (%d after trimming whitespace), want %d raw bytes or %d hex digits",
				len(b), len(t), len(k), hex.EncodedLen(len(k)))
		}
		if _, err := hex.Decode(k[:], t); err != nil {
			return Key{}, errors.New("64 characters but not all hex digits")
		}
	}
	if k == (Key{}) {
		return Key{}, fmt.Errorf("all zero bytes: %w", ErrNoKey)
	}
	return k, nil
}

// LoadKey reads the key file at path and parses it with [ParseKey].
func LoadKey(path string) (Key, error) {
	k, err := loadKey(path)
	if err != nil {
		return Key{}, fmt.Errorf("load ticket key %s: %w", path, err)
	}
	return k, nil
}

func loadKey(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		// The wrap in LoadKey already names the path; keep only the cause
		// (still matchable with errors.Is, e.g. fs.ErrNotExist).
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			return Key{}, pe.Err
		}
		return Key{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, err
	}
	if len(b) > maxKeyFile {
		return Key{}, fmt.Errorf("file larger than %d bytes", maxKeyFile)
	}
	return parseKey(b)
}

// String returns "REDACTED".
func (Key) String() string { return redacted }

// GoString returns "ticket.Key(REDACTED)", for %#v.
func (Key) GoString() string { return "ticket.Key(" + redacted + ")" }

// Format makes every fmt verb, including %x and %d, print the redacted form
// rather than the bytes of the array.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, redacted)
}

// LogValue implements [slog.LogValuer].
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "REDACTED", so encoding/json and similar encoders,
// including slog's JSON handler on a struct holding a Key, never write the
// key. A Key is never meant to be serialised; key files are written by
// hand or by the tool that generated them.
func (Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }
