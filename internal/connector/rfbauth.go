package connector

import (
	"crypto/des"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// This file is the RFB handshake (RFC 6143 §7.1, §7.2 and §7.3.1) for the
// connections where the connector stands in the middle of it: with the
// server it plays the client and logs in (None or VncAuth); with the client
// it plays a server that offers None only. The client then sends ClientInit
// through the connector and everything after it is relayed.

// rfbVersion is a protocol version the connector speaks, by minor number.
type rfbVersion int

const (
	rfb33 rfbVersion = 3
	rfb37 rfbVersion = 7
	rfb38 rfbVersion = 8
)

// greeting is the ProtocolVersion message for v.
func (v rfbVersion) greeting() []byte {
	return fmt.Appendf(nil, "RFB 003.%03d\n", int(v))
}

// RFB security types (RFC 6143 §7.2).
const (
	secInvalid = 0
	secNone    = 1
	secVNCAuth = 2
)

// maxReason bounds a failure reason string read from a server.
const maxReason = 1 << 10

// errVNCAuthFailed means the server refused the VNC password.
var errVNCAuthFailed = errors.New("vnc server refused the password")

// parseVersion reads a ProtocolVersion message, "RFB xxx.yyy\n", and
// returns the version to speak. RFC 6143 §7.1.1: 3.3, 3.7 and 3.8 are the
// published versions and anything else should be treated as 3.3; versions
// above 3.8 (Apple's 3.889) speak the 3.8 handshake.
func parseVersion(b []byte) (rfbVersion, error) {
	if len(b) != 12 || string(b[:4]) != "RFB " || b[7] != '.' || b[11] != '\n' {
		return 0, fmt.Errorf("malformed ProtocolVersion %q", b)
	}
	major, ok1 := atoi3(b[4:7])
	minor, ok2 := atoi3(b[8:11])
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("malformed ProtocolVersion %q", b)
	}
	if major != 3 {
		return 0, fmt.Errorf("unsupported ProtocolVersion %q", b)
	}
	switch {
	case minor >= 8:
		return rfb38, nil
	case minor == 7:
		return rfb37, nil
	}
	return rfb33, nil
}

func atoi3(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + int(c-'0')
	}
	return n, true
}

// serverLogin runs the client side of the handshake with the VNC server on
// rw, through the SecurityResult, leaving the server waiting for
// ClientInit. With password set it prefers VncAuth; without, it needs a
// server that offers None.
func serverLogin(rw io.ReadWriter, password string) error {
	var b [12]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return fmt.Errorf("read ProtocolVersion: %w", err)
	}
	v, err := parseVersion(b[:])
	if err != nil {
		return err
	}
	if _, err := rw.Write(v.greeting()); err != nil {
		return fmt.Errorf("write ProtocolVersion: %w", err)
	}

	var sec byte
	if v == rfb33 {
		// 3.3: the server decides, and says so in a 4-byte word.
		var w [4]byte
		if _, err := io.ReadFull(rw, w[:]); err != nil {
			return fmt.Errorf("read security type: %w", err)
		}
		switch t := binary.BigEndian.Uint32(w[:]); t {
		case secInvalid:
			return fmt.Errorf("server refused the connection: %q", readReason(rw))
		case secNone, secVNCAuth:
			sec = byte(t)
		default:
			return fmt.Errorf("server requires security type %d, which the connector does not support", t)
		}
		if sec == secVNCAuth && password == "" {
			return errors.New("server requires VncAuth but no VNC password is configured")
		}
	} else {
		var n [1]byte
		if _, err := io.ReadFull(rw, n[:]); err != nil {
			return fmt.Errorf("read security types: %w", err)
		}
		if n[0] == 0 {
			return fmt.Errorf("server refused the connection: %q", readReason(rw))
		}
		types := make([]byte, n[0])
		if _, err := io.ReadFull(rw, types); err != nil {
			return fmt.Errorf("read security types: %w", err)
		}
		switch {
		case password != "" && slices.Contains(types, secVNCAuth):
			sec = secVNCAuth
		case slices.Contains(types, secNone):
			sec = secNone
		case slices.Contains(types, secVNCAuth):
			return errors.New("server requires VncAuth but no VNC password is configured")
		default:
			return fmt.Errorf("server offers security types %v, none of which the connector supports (None, VncAuth)", types)
		}
		if _, err := rw.Write([]byte{sec}); err != nil {
			return fmt.Errorf("write security type: %w", err)
		}
	}

	if sec == secVNCAuth {
		var challenge [16]byte
		if _, err := io.ReadFull(rw, challenge[:]); err != nil {
			return fmt.Errorf("read VncAuth challenge: %w", err)
		}
		resp := vncAuthResponse(password, challenge)
		if _, err := rw.Write(resp[:]); err != nil {
			return fmt.Errorf("write VncAuth response: %w", err)
		}
	}
	// 3.8 always sends a SecurityResult; 3.3 and 3.7 only after VncAuth
	// (RFC 6143 §7.1.3 and Appendix A).
	if v == rfb38 || sec == secVNCAuth {
		var w [4]byte
		if _, err := io.ReadFull(rw, w[:]); err != nil {
			return fmt.Errorf("read SecurityResult: %w", err)
		}
		if binary.BigEndian.Uint32(w[:]) != 0 {
			if v == rfb38 {
				return fmt.Errorf("%w: %q", errVNCAuthFailed, readReason(rw))
			}
			return errVNCAuthFailed
		}
	}
	return nil
}

// readReason reads a failure reason (a 4-byte length, then text) for a log
// line. It returns what it could read, never an error: the handshake has
// failed already and the reason is only a courtesy.
func readReason(r io.Reader) string {
	var w [4]byte
	if _, err := io.ReadFull(r, w[:]); err != nil {
		return "(no reason given)"
	}
	n := min(binary.BigEndian.Uint32(w[:]), maxReason)
	b := make([]byte, n)
	k, _ := io.ReadFull(r, b)
	return string(b[:k])
}

// vncAuthResponse encrypts the VncAuth challenge with the password, as
// RFC 6143 §7.2.2 says and as every VNC implementation does it: the
// password, truncated or zero-padded to 8 bytes, is the DES key with the
// bits of each byte reversed (an artefact of the original d3des code),
// and the 16-byte challenge is two DES blocks in ECB mode.
func vncAuthResponse(password string, challenge [16]byte) [16]byte {
	var key [8]byte
	copy(key[:], password)
	for i := range key {
		key[i] = bits.Reverse8(key[i])
	}
	block, err := des.NewCipher(key[:])
	if err != nil {
		panic("vnc auth: des.NewCipher with an 8-byte key: " + err.Error()) // cannot happen
	}
	var resp [16]byte
	block.Encrypt(resp[:8], challenge[:8])
	block.Encrypt(resp[8:], challenge[8:])
	return resp
}

// clientLogin runs the server side of the handshake with a client on rw:
// it offers version 3.8 and security type None, accepts 3.3 and 3.7
// clients too, and returns the shared flag of the client's ClientInit.
func clientLogin(rw io.ReadWriter) (shared byte, err error) {
	if _, err := rw.Write(rfb38.greeting()); err != nil {
		return 0, fmt.Errorf("write ProtocolVersion: %w", err)
	}
	var b [12]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return 0, fmt.Errorf("read ProtocolVersion: %w", err)
	}
	v, err := parseVersion(b[:])
	if err != nil {
		return 0, err
	}
	if v == rfb33 {
		if _, err := rw.Write([]byte{0, 0, 0, secNone}); err != nil {
			return 0, fmt.Errorf("write security type: %w", err)
		}
	} else {
		if _, err := rw.Write([]byte{1, secNone}); err != nil {
			return 0, fmt.Errorf("write security types: %w", err)
		}
		var t [1]byte
		if _, err := io.ReadFull(rw, t[:]); err != nil {
			return 0, fmt.Errorf("read security type: %w", err)
		}
		if t[0] != secNone {
			if v == rfb38 {
				const reason = "security type not offered"
				msg := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 1}, uint32(len(reason)))
				rw.Write(append(msg, reason...)) // best effort: we are failing anyway
			}
			return 0, fmt.Errorf("client chose security type %d, not the offered None", t[0])
		}
		// 3.7 sends no SecurityResult for None; 3.8 does.
		if v == rfb38 {
			if _, err := rw.Write([]byte{0, 0, 0, 0}); err != nil {
				return 0, fmt.Errorf("write SecurityResult: %w", err)
			}
		}
	}
	var ci [1]byte
	if _, err := io.ReadFull(rw, ci[:]); err != nil {
		return 0, fmt.Errorf("read ClientInit: %w", err)
	}
	return ci[0], nil
}

// errClientHandshake wraps the errors of relayHandshake that are the
// client's doing (bytes that are not an RFB handshake, a choice the server
// did not offer, silence, a hang-up), as opposed to the server's.
var errClientHandshake = errors.New("client RFB handshake refused")

// relayHandshake carries the opening of the RFB handshake between a client
// and the server for a connection whose bytes otherwise pass unchanged:
// the server's ProtocolVersion to the client, the client's back, and (3.7
// and 3.8) the server's security types to the client and the client's
// choice back. It checks what the client sends before the server sees
// it, so that garbage never reaches the server; everything after the
// choice (the security type's own exchange, ClientInit) is relayed as it
// is. An error wrapping errClientHandshake means the client was at fault
// and nothing of it was sent on.
//
// A server that refuses the connection (no security types) is not an
// error: its refusal is passed on and the relay carries the reason.
func relayHandshake(client, server io.ReadWriter) error {
	var sv [12]byte
	if _, err := io.ReadFull(server, sv[:]); err != nil {
		return fmt.Errorf("read server ProtocolVersion: %w", err)
	}
	serverV, err := parseVersion(sv[:])
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if _, err := client.Write(sv[:]); err != nil {
		return fmt.Errorf("%w: write ProtocolVersion: %w", errClientHandshake, err)
	}
	var cv [12]byte
	if _, err := io.ReadFull(client, cv[:]); err != nil {
		return fmt.Errorf("%w: read ProtocolVersion: %w", errClientHandshake, err)
	}
	clientV, err := parseVersion(cv[:])
	if err != nil {
		return fmt.Errorf("%w: %w", errClientHandshake, err)
	}
	if _, err := server.Write(cv[:]); err != nil {
		return fmt.Errorf("write ProtocolVersion to server: %w", err)
	}
	if min(serverV, clientV) == rfb33 {
		// 3.3: the server names the security type; the client has no
		// choice to check.
		return nil
	}
	var n [1]byte
	if _, err := io.ReadFull(server, n[:]); err != nil {
		return fmt.Errorf("read security types: %w", err)
	}
	types := make([]byte, n[0])
	if _, err := io.ReadFull(server, types); err != nil {
		return fmt.Errorf("read security types: %w", err)
	}
	if _, err := client.Write(append(n[:], types...)); err != nil {
		return fmt.Errorf("%w: write security types: %w", errClientHandshake, err)
	}
	if n[0] == 0 {
		return nil // the server refused; the reason follows in the relay
	}
	var choice [1]byte
	if _, err := io.ReadFull(client, choice[:]); err != nil {
		return fmt.Errorf("%w: read security type: %w", errClientHandshake, err)
	}
	if !slices.Contains(types, choice[0]) {
		return fmt.Errorf("%w: client chose security type %d, not one of the offered %v", errClientHandshake, choice[0], types)
	}
	if _, err := server.Write(choice[:]); err != nil {
		return fmt.Errorf("write security type to server: %w", err)
	}
	return nil
}
