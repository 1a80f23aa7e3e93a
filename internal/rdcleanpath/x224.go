package rdcleanpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxX224 bounds an X.224 Connection Request or Confirm in a TPKT. A
// Confirm is 19 bytes; a Request carries a cookie or routing token and
// is rarely over 100.
const MaxX224 = 512

// X.224 TPDU codes (the high nibble of the second byte after the TPKT).
const (
	x224ConnectionRequest = 0xE0
	x224ConnectionConfirm = 0xD0
)

// RDP negotiation structures that can follow a Connection Confirm.
const (
	negRsp     = 0x02
	negFailure = 0x03
)

// checkTPKT checks that b is exactly one TPKT (version 3) holding one
// X.224 TPDU whose length indicator fits, and returns the TPDU code.
func checkTPKT(b []byte) (byte, error) {
	if len(b) < 7 {
		return 0, fmt.Errorf("x224: %d bytes, too short for a TPKT", len(b))
	}
	if b[0] != 3 || b[1] != 0 {
		return 0, fmt.Errorf("x224: not a TPKT (version %d)", b[0])
	}
	if n := int(binary.BigEndian.Uint16(b[2:4])); n != len(b) {
		return 0, fmt.Errorf("x224: TPKT says %d bytes, have %d", n, len(b))
	}
	if li := int(b[4]); li != len(b)-5 {
		return 0, fmt.Errorf("x224: length indicator %d, want %d", li, len(b)-5)
	}
	return b[5] & 0xF0, nil
}

// CheckRequest checks that cr is one X.224 Connection Request in a TPKT,
// at most [MaxX224] bytes: what the gateway forwards to the RDP server as
// it is.
func CheckRequest(cr []byte) error {
	if len(cr) > MaxX224 {
		return fmt.Errorf("x224: request of %d bytes, at most %d", len(cr), MaxX224)
	}
	code, err := checkTPKT(cr)
	if err != nil {
		return err
	}
	if code != x224ConnectionRequest {
		return fmt.Errorf("x224: TPDU %#02x is not a Connection Request", code)
	}
	return nil
}

// ErrTooLong is a TPKT longer than the reader allows.
var ErrTooLong = errors.New("x224: TPKT too long")

// ReadTPKT reads one TPKT from r, refusing one longer than max before
// reading its body.
func ReadTPKT(r io.Reader, max int) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("x224: read TPKT header: %w", err)
	}
	if h[0] != 3 || h[1] != 0 {
		return nil, fmt.Errorf("x224: not a TPKT (version %d)", h[0])
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if n > max {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, n, max)
	}
	if n < 7 {
		return nil, fmt.Errorf("x224: TPKT of %d bytes", n)
	}
	b := make([]byte, n)
	copy(b, h[:])
	if _, err := io.ReadFull(r, b[4:]); err != nil {
		return nil, fmt.Errorf("x224: read TPKT body: %w", err)
	}
	return b, nil
}

// Confirm is what a Connection Confirm says.
type Confirm struct {
	// Failed is set when the server refused the negotiation
	// (RDP_NEG_FAILURE); FailureCode is its reason (for example 5,
	// HYBRID_REQUIRED_BY_SERVER).
	Failed      bool
	FailureCode uint32
	// Protocol is the security protocol the server selected
	// (RDP_NEG_RSP; 0 standard RDP, 1 TLS, 2 CredSSP, 8 CredSSP early
	// user auth) when it answered with one.
	Protocol uint32
}

// ParseConfirm checks that cc is one X.224 Connection Confirm in a TPKT
// and reads its RDP negotiation answer, if any.
func ParseConfirm(cc []byte) (Confirm, error) {
	code, err := checkTPKT(cc)
	if err != nil {
		return Confirm{}, err
	}
	if code != x224ConnectionConfirm {
		return Confirm{}, fmt.Errorf("x224: TPDU %#02x is not a Connection Confirm", code)
	}
	// TPKT (4), LI, code, DST-REF (2), SRC-REF (2), class: 11 bytes, then
	// an optional 8-byte RDP_NEG_RSP or RDP_NEG_FAILURE.
	if len(cc) < 11 {
		return Confirm{}, fmt.Errorf("x224: Connection Confirm of %d bytes", len(cc))
	}
	neg := cc[11:]
	if len(neg) == 0 {
		return Confirm{}, nil
	}
	if len(neg) != 8 || binary.LittleEndian.Uint16(neg[2:4]) != 8 {
		return Confirm{}, fmt.Errorf("x224: negotiation answer of %d bytes", len(neg))
	}
	v := binary.LittleEndian.Uint32(neg[4:])
	switch neg[0] {
	case negRsp:
		return Confirm{Protocol: v}, nil
	case negFailure:
		return Confirm{Failed: true, FailureCode: v}, nil
	}
	return Confirm{}, fmt.Errorf("x224: negotiation answer type %d", neg[0])
}

// ProtocolSSL is RDP_NEG_RSP's selectedProtocol for TLS without CredSSP.
const ProtocolSSL = 0x1

// SetProtocol returns a copy of the Connection Confirm cc with its
// negotiated protocol replaced by p. cc must be one with an RDP_NEG_RSP:
// a refusal or an answer without negotiation is an error.
func SetProtocol(cc []byte, p uint32) ([]byte, error) {
	conf, err := ParseConfirm(cc)
	if err != nil {
		return nil, err
	}
	if conf.Failed || len(cc) != 19 {
		return nil, errors.New("x224: the Connection Confirm negotiated no protocol")
	}
	out := append([]byte(nil), cc...)
	binary.LittleEndian.PutUint32(out[15:], p)
	return out, nil
}
