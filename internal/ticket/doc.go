// Package ticket owns the short-lived, single-session credential that the
// gateway hands to a browser and a connector checks before relaying a byte:
// the wire format, signing and verification, the HMAC key type, and the
// replay guard connectors use to refuse a ticket the second time.
//
// It is pure: no I/O except [LoadKey] reading a key file, no logging, no
// goroutines, and imports nothing but the standard library. It must not
// learn about sessions, users or HTTP beyond the strings in [Claims]; the
// gateway decides who gets a ticket and the connector decides what a valid
// ticket lets through.
//
// # Trust model
//
// A ticket is a bearer credential: whoever holds it may connect, once, to the
// named connector of the named session until it expires. The gateway and the
// connectors share one 32-byte [Key]. The key must be used for tickets only.
// Claims are signed, not encrypted: the holder can read them, so they must
// never carry secrets.
//
// # Wire format, version 1
//
// A token is ASCII and URL-safe, so it can travel unescaped in a query
// parameter, an "Authorization: Bearer" header or a cookie value:
//
//	token   = "v1." payload "." mac
//	payload = base64url(P)   ; RFC 4648 §5, no padding, strict
//	mac     = base64url(M)   ; always 43 characters
//
// M is HMAC-SHA256 keyed with the ticket key over the label
// "airlock ticket\n" followed by the token's first part, "v1." payload, as
// it appears on the wire. The MAC thus covers the version as well as the
// claims, and verification checks it before decoding the payload. The label
// keeps a ticket MAC from being valid for any other use of the same key.
//
// P is a sequence of fields with no padding or trailing bytes:
//
//	nonce     str
//	mode      1 byte: 1 = control, 2 = view
//	expires   8 bytes: big-endian int64, Unix seconds, > 0
//	session   str
//	connector str
//	user      str
//
//	str = 1 byte length n (1..255), then n bytes of UTF-8 with no
//	      control (Cc), format (Cf) or line/paragraph separator
//	      (Zl, Zp) characters
//
// The nonce comes first so that the redacted prefix [Token] logs differs
// between tickets and can tie log lines together.
//
// Expiry has whole-second resolution: [Sign] truncates Claims.Expires down,
// so a ticket never outlives the time asked for, and [Verify] returns it as
// a UTC time. A ticket is expired at and after its expiry instant.
//
// A token is at most [MaxTokenLen] bytes; [Verify] checks that before
// decoding anything. The largest legal token is 1,425 bytes.
//
// A new format gets a new prefix ("v2."); [Verify] refuses prefixes it does
// not know as malformed.
package ticket
