package rdcleanpath

import (
	"bytes"
	"errors"
	"testing"
)

func TestCheckRequest(t *testing.T) {
	if err := CheckRequest(crBytes); err != nil {
		t.Fatal(err)
	}
	// With a cookie and an RDP_NEG_REQ for TLS|CredSSP, as IronRDP sends.
	cookie := []byte("Cookie: mstshash=alice\r\n")
	cr := []byte{0x03, 0x00, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0}
	cr = append(cr, cookie...)
	cr = append(cr, 0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00)
	cr[3] = byte(len(cr))
	cr[4] = byte(len(cr) - 5)
	if err := CheckRequest(cr); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"confirm":    ccTLS,
		"short":      crBytes[:6],
		"tpkt len":   append(append([]byte{}, crBytes...), 0),
		"li":         {0x03, 0x00, 0x00, 0x0B, 0x07, 0xE0, 0, 0, 0, 0, 0},
		"version 2":  {0x02, 0x00, 0x00, 0x0B, 0x06, 0xE0, 0, 0, 0, 0, 0},
		"over limit": append([]byte{0x03, 0x00, 0x02, 0x05, 0xFF, 0xE0}, make([]byte, 511)...),
	}
	for name, b := range bad {
		if err := CheckRequest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseConfirm(t *testing.T) {
	c, err := ParseConfirm(ccTLS)
	if err != nil || c.Failed || c.Protocol != 1 {
		t.Errorf("TLS confirm: %+v, %v", c, err)
	}
	c, err = ParseConfirm(ccFail)
	if err != nil || !c.Failed || c.FailureCode != 5 {
		t.Errorf("failure confirm: %+v, %v", c, err)
	}
	plain := []byte{0x03, 0x00, 0x00, 0x0B, 0x06, 0xD0, 0, 0, 0, 0, 0}
	if c, err := ParseConfirm(plain); err != nil || c != (Confirm{}) {
		t.Errorf("plain confirm: %+v, %v", c, err)
	}
	for _, b := range [][]byte{crBytes, ccTLS[:15], append(append([]byte{}, ccTLS[:11]...), 0x09, 0, 8, 0, 0, 0, 0, 0)} {
		if c, err := ParseConfirm(b); err == nil {
			t.Errorf("ParseConfirm(%x) = %+v", b, c)
		}
	}
}

func TestReadTPKT(t *testing.T) {
	b, err := ReadTPKT(bytes.NewReader(append(append([]byte{}, ccTLS...), 1, 2)), MaxX224)
	if err != nil || !bytes.Equal(b, ccTLS) {
		t.Fatalf("ReadTPKT = %x, %v", b, err)
	}
	// A server announcing 64 KiB is refused after the header.
	if _, err := ReadTPKT(bytes.NewReader([]byte{3, 0, 0xFF, 0xFF}), MaxX224); !errors.Is(err, ErrTooLong) {
		t.Errorf("long TPKT: %v", err)
	}
	if _, err := ReadTPKT(bytes.NewReader([]byte("HTTP/1.1 400")), MaxX224); err == nil {
		t.Error("not a TPKT: accepted")
	}
}

// TestSetProtocol: a replay's Confirm says TLS where the recorded one said
// CredSSP, the rest unchanged, and the original is not touched; a refusal
// or a Confirm without negotiation is not rewritten.
func TestSetProtocol(t *testing.T) {
	hybrid := append([]byte(nil), ccTLS...)
	hybrid[15] = 0x02
	out, err := SetProtocol(hybrid, ProtocolSSL)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ParseConfirm(out); err != nil || c.Protocol != ProtocolSSL || !bytes.Equal(out[:15], hybrid[:15]) || hybrid[15] != 0x02 {
		t.Fatalf("rewritten %x (%+v, %v) from %x", out, c, err, hybrid)
	}
	failed := append([]byte(nil), ccTLS...)
	failed[11] = negFailure
	for _, cc := range [][]byte{failed, ccTLS[:11], crBytes} {
		if _, err := SetProtocol(cc, ProtocolSSL); err == nil {
			t.Errorf("%x rewritten", cc)
		}
	}
}
