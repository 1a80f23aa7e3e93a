package ticket

import (
	"fmt"
	"io"
	"log/slog"
)

// Token is a ticket in its wire form, typed so that logging or printing it
// shows only a short prefix: enough to tell tickets apart in logs (the
// nonce is encoded first), never enough to use one. Convert with
// Token(s) at the point a token is logged; the string itself is the
// credential.
//
// Token's MarshalText is redacted too, because slog's JSON handler
// marshals structs with encoding/json. So a Token is for logging only: to
// send a ticket to a browser, use the string from [Sign]. Putting a Token
// in a response fails visibly (the client gets "REDACTED") instead of a
// log leaking silently.
type Token string

// tokenShown is how many leading bytes of a Token are printed: "v1." and
// 9 payload characters, which encode the nonce length and about 5 bytes of
// the nonce. The MAC, which is what makes a token usable, is never shown.
const tokenShown = 12

// String returns the redacted form, e.g. "v1.GktaS0ZBN...REDACTED".
func (t Token) String() string { return t.redact() }

// GoString returns the redacted form too, for %#v.
func (t Token) GoString() string { return "ticket.Token(" + t.redact() + ")" }

// Format makes every fmt verb print the redacted form, including %x and
// %q, which would otherwise format the underlying string.
func (t Token) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, t.GoString())
		return
	}
	io.WriteString(f, t.redact())
}

// LogValue implements [slog.LogValuer].
func (t Token) LogValue() slog.Value { return slog.StringValue(t.redact()) }

// MarshalText returns the redacted form; see [Token].
func (t Token) MarshalText() ([]byte, error) { return []byte(t.redact()), nil }

// redact keeps the prefix only when the token is long enough that the
// prefix is a small part of it and the prefix is plain base64url: a short
// or odd value may be something else pasted in the wrong place, such as a
// password, and is hidden entirely.
func (t Token) redact() string {
	if len(t) < 3*tokenShown {
		return redacted
	}
	for i := range tokenShown {
		if !isTokenByte(t[i]) {
			return redacted
		}
	}
	return string(t[:tokenShown]) + "..." + redacted
}

func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.'
}
