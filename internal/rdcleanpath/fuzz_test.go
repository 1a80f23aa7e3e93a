package rdcleanpath

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzPDU feeds hostile bytes to the request reader and the decoder: no
// panic, Read never returns more than the limit or more than one PDU, and
// whatever Parse accepts encodes and decodes back to the same value.
// (Not to the same bytes: encoding/asn1 reads a PrintableString where a
// UTF8String belongs, and an explicit empty optional field, which it
// never writes.)
func FuzzPDU(f *testing.F) {
	for _, v := range vectors {
		b, _ := hex.DecodeString(v.der)
		f.Add(b)
	}
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := Read(bytes.NewReader(in), 1024)
		if err != nil {
			return
		}
		if len(b) > 1024 || !bytes.HasPrefix(in, b) {
			t.Fatalf("Read returned %d bytes not a prefix of the input", len(b))
		}
		p, err := Parse(b)
		if err != nil {
			return
		}
		_ = p.Kind()
		again, err := p.Marshal()
		if err != nil {
			t.Fatalf("accepted %x but cannot encode it: %v", b, err)
		}
		q, err := Parse(again)
		if err != nil {
			t.Fatalf("accepted %x, encodes as %x, which it refuses: %v", b, again, err)
		}
		if again2, _ := q.Marshal(); !bytes.Equal(again, again2) {
			t.Fatalf("value of %x changes when encoded and decoded", b)
		}
	})
}

// FuzzX224 feeds hostile bytes to the X.224 checks the gateway runs on the
// browser's request and the server's confirm.
func FuzzX224(f *testing.F) {
	f.Add(crBytes)
	f.Add(ccTLS)
	f.Add(ccFail)
	f.Fuzz(func(t *testing.T, in []byte) {
		if CheckRequest(in) == nil && (len(in) > MaxX224 || in[0] != 3) {
			t.Fatalf("accepted %x", in)
		}
		ParseConfirm(in)
		if b, err := ReadTPKT(bytes.NewReader(in), MaxX224); err == nil && (len(b) > MaxX224 || !bytes.HasPrefix(in, b)) {
			t.Fatalf("ReadTPKT returned %x", b)
		}
	})
}
