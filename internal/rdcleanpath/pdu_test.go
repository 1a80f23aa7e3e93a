package rdcleanpath

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
)

// The vectors below were written by hand from the ASN.1 definition in
// doc.go (tag, length, value, field by field), not produced by the code
// under test. TestVectorsOpenSSL has a second decoder read them back.
var (
	// A Connection Request of the smallest legal shape (no cookie, no
	// negotiation request).
	crBytes = []byte{0x03, 0x00, 0x00, 0x0B, 0x06, 0xE0, 0x00, 0x00, 0x00, 0x00, 0x00}
	// A Connection Confirm selecting TLS (RDP_NEG_RSP, protocol 1).
	ccTLS = []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0x00, 0x00, 0x12, 0x34, 0x00,
		0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00}
	// A Connection Confirm refusing: RDP_NEG_FAILURE 5
	// (HYBRID_REQUIRED_BY_SERVER).
	ccFail = []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x03, 0x00, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00}
)

var vectors = []struct {
	name string
	pdu  *PDU
	kind Kind
	der  string // hex
	// openssl is `openssl asn1parse -i`'s reading of der, as "depth
	// form: type :value" lines.
	openssl string
}{
	{
		name: "request",
		pdu:  &PDU{Version: Version, Destination: "node7:3389", ProxyAuth: "tkt", X224: crBytes},
		kind: KindRequest,
		der: "302a" + "a004" + "02020d3e" +
			"a20c" + "0c0a" + hex.EncodeToString([]byte("node7:3389")) +
			"a305" + "0c03" + hex.EncodeToString([]byte("tkt")) +
			"a60d" + "040b" + hex.EncodeToString(crBytes),
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 2 ]
2 prim: UTF8STRING :node7:3389
1 cons: cont [ 3 ]
2 prim: UTF8STRING :tkt
1 cons: cont [ 6 ]
2 prim: OCTET STRING [HEX DUMP]:0300000B06E00000000000`,
	},
	{
		name: "response",
		pdu:  Response("127.0.0.1:3389", ccTLS, [][]byte{{1, 2, 3}, {4, 5}}),
		kind: KindResponse,
		der: "303c" + "a004" + "02020d3e" +
			"a615" + "0413" + hex.EncodeToString(ccTLS) +
			"a70b" + "3009" + "0403010203" + "04020405" +
			"a910" + "0c0e" + hex.EncodeToString([]byte("127.0.0.1:3389")),
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 6 ]
2 prim: OCTET STRING [HEX DUMP]:030000130ED000001234000200080001000000
1 cons: cont [ 7 ]
2 cons: SEQUENCE
3 prim: OCTET STRING [HEX DUMP]:010203
3 prim: OCTET STRING [HEX DUMP]:0405
1 cons: cont [ 9 ]
2 prim: UTF8STRING :127.0.0.1:3389`,
	},
	{
		name: "http 403",
		pdu:  HTTPError(403),
		kind: KindGeneralError,
		der:  "3015" + "a004" + "02020d3e" + "a10d" + "300b" + "a003" + "020101" + "a104" + "02020193",
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 1 ]
2 cons: SEQUENCE
3 cons: cont [ 0 ]
4 prim: INTEGER :01
3 cons: cont [ 1 ]
4 prim: INTEGER :0193`,
	},
	{
		name: "wsa refused",
		pdu:  WSAError(WSAEConnRefused),
		kind: KindGeneralError,
		der:  "3015" + "a004" + "02020d3e" + "a10d" + "300b" + "a003" + "020101" + "a204" + "0202274d",
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 1 ]
2 cons: SEQUENCE
3 cons: cont [ 0 ]
4 prim: INTEGER :01
3 cons: cont [ 2 ]
4 prim: INTEGER :274D`,
	},
	{
		name: "tls alert 40",
		pdu:  TLSAlert(40),
		kind: KindGeneralError,
		der:  "3014" + "a004" + "02020d3e" + "a10c" + "300a" + "a003" + "020101" + "a303" + "020128",
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 1 ]
2 cons: SEQUENCE
3 cons: cont [ 0 ]
4 prim: INTEGER :01
3 cons: cont [ 3 ]
4 prim: INTEGER :28`,
	},
	{
		name: "negotiation failure",
		pdu:  NegotiationFailure(ccFail),
		kind: KindNegotiationError,
		der:  "3026" + "a004" + "02020d3e" + "a107" + "3005" + "a003" + "020102" + "a615" + "0413" + hex.EncodeToString(ccFail),
		openssl: `0 cons: SEQUENCE
1 cons: cont [ 0 ]
2 prim: INTEGER :0D3E
1 cons: cont [ 1 ]
2 cons: SEQUENCE
3 cons: cont [ 0 ]
4 prim: INTEGER :02
1 cons: cont [ 6 ]
2 prim: OCTET STRING [HEX DUMP]:030000130ED000000000000300080005000000`,
	},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			want, err := hex.DecodeString(v.der)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.pdu.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n %x\nwant\n %x", got, want)
			}
			p, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			if k := p.Kind(); k != v.kind {
				t.Errorf("kind %v, want %v", k, v.kind)
			}
			again, _ := p.Marshal()
			if !bytes.Equal(again, want) {
				t.Errorf("decode and encode again changed it:\n %x", again)
			}
			n, err := Detect(want[:2])
			if err != nil || n != len(want) {
				t.Errorf("Detect = %d, %v; want %d", n, err, len(want))
			}
		})
	}
}

var asn1parseLine = regexp.MustCompile(`d=(\d+)\s+hl=\d+\s+l=\s*\d+\s+(cons|prim):\s*(.*?)\s*$`)

// TestVectorsOpenSSL reads every hand-written vector with a second,
// independent DER decoder (OpenSSL's), so a vector written wrong in the
// same way as the code cannot pass.
func TestVectorsOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (scripts/install-deps.sh installs it)")
	}
	dir := t.TempDir()
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			b, _ := hex.DecodeString(v.der)
			f := filepath.Join(dir, "v.der")
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("openssl", "asn1parse", "-inform", "DER", "-in", f, "-i").CombinedOutput()
			if err != nil {
				t.Fatalf("openssl asn1parse: %v\n%s", err, out)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				m := asn1parseLine.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("unexpected asn1parse line %q", l)
				}
				rest := regexp.MustCompile(`\s+:`).ReplaceAllString(regexp.MustCompile(`\s+`).ReplaceAllString(m[3], " "), " :")
				got = append(got, m[1]+" "+m[2]+": "+rest)
			}
			if g := strings.Join(got, "\n"); g != v.openssl {
				t.Errorf("openssl reads\n%s\nwant\n%s", g, v.openssl)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := hex.DecodeString(vectors[0].der)
	bad := map[string][]byte{
		"empty":          {},
		"trailing byte":  append(append([]byte{}, good...), 0),
		"truncated":      good[:len(good)-1],
		"version 3389":   mustHex("3006a00402020d3d"),
		"no version":     mustHex("3000"),
		"long form 0x2a": append(mustHex("30812a"), good[2:]...),
		"bad utf8":       mustHex("300ca00402020d3ea2040c02ff00"),
	}
	for name, b := range bad {
		if p, err := Parse(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, p)
		}
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestDetect(t *testing.T) {
	for _, short := range [][]byte{{}, {0x30}, {0x30, 0x82}, {0x30, 0x82, 0x01}} {
		if _, err := Detect(short); !errors.Is(err, ErrShort) {
			t.Errorf("Detect(%x) = %v, want ErrShort", short, err)
		}
	}
	for _, bad := range [][]byte{{0x31, 0x00}, {0x30, 0x80}, {0x30, 0x85, 1, 1, 1, 1, 1}, {0x30, 0x81, 0x10}, {0x30, 0x82, 0x00, 0x90}} {
		if n, err := Detect(bad); err == nil || errors.Is(err, ErrShort) {
			t.Errorf("Detect(%x) = %d, %v, want a refusal", bad, n, err)
		}
	}
	if n, err := Detect([]byte{0x30, 0x82, 0x01, 0x00}); err != nil || n != 4+256 {
		t.Errorf("Detect long form = %d, %v", n, err)
	}
}

// TestRead: a PDU split into one-byte reads is read whole, and nothing
// after it is consumed; one over the limit is refused before its body.
func TestRead(t *testing.T) {
	good, _ := hex.DecodeString(vectors[1].der)
	stream := append(append([]byte{}, good...), 0xAA, 0xBB)
	r := bytes.NewReader(stream)
	b, err := Read(iotest.OneByteReader(r), MaxRequest)
	if err != nil || !bytes.Equal(b, good) {
		t.Fatalf("Read = %x, %v", b, err)
	}
	if rest, _ := io.ReadAll(r); !bytes.Equal(rest, []byte{0xAA, 0xBB}) {
		t.Errorf("left %x after the PDU", rest)
	}
	big := []byte{0x30, 0x83, 0x10, 0x00, 0x00}
	if _, err := Read(bytes.NewReader(big), MaxRequest); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized PDU: %v", err)
	}
}
