package recording

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestRDPRecording: an RDP recording's header block goes first in the
// file and in the sidecar, and SplitRDP gives it back with the server's
// bytes after it.
func TestRDPRecording(t *testing.T) {
	h := RDPHeader{Confirm: []byte{3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 2, 0, 0, 0},
		Certificates: [][]byte{bytes.Repeat([]byte{0x30}, 700), {1, 2, 3}}, Channels: []string{"cliprdr", "rdpsnd", "drdynvc"}}
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{Session: "s", Kind: KindRDP}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.BeginRDP(h); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte{3, 0, 0, 7, 2, 0xf0, 0x80})
	w.Write([]byte{0, 5, 1, 2, 3})
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindRDP || m.RDP == nil || !reflect.DeepEqual(*m.RDP, h) {
		t.Fatalf("sidecar %+v", m)
	}
	f, _ := os.Open(path)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	blocks, ended, err := Read(zr)
	if err != nil || !ended {
		t.Fatalf("read: %v, ended %v", err, ended)
	}
	got, data, err := SplitRDP(blocks)
	if err != nil || !reflect.DeepEqual(got, h) || len(data) != 2 || !bytes.Equal(data[1].Data, []byte{0, 5, 1, 2, 3}) {
		t.Fatalf("split: %+v %v %v", got, data, err)
	}
	f.Seek(0, 0)
	zr, _ = gzip.NewReader(f)
	if peek, ok := PeekRDP(zr); !ok || !reflect.DeepEqual(peek, h) {
		t.Fatalf("peek: %+v %v", peek, ok)
	}
	if _, ok := PeekRDP(bytes.NewReader(append([]byte(Magic), 0, 0, 0, 4, 'R', 'F', 'B', ' '))); ok {
		t.Fatal("an RFB stream peeked as RDP")
	}
	if _, _, err := SplitRDP(nil); err == nil {
		t.Fatal("a recording without a header split")
	}
	if _, err := (RDPHeader{Channels: []string{"toolongname"}}).Marshal(); err == nil {
		t.Fatal("a nine-letter channel name marshalled")
	}
}

// FuzzRDPHeader: any header block parses or is refused without panic, and
// what parses marshals back to the same bytes (one encoding per header).
func FuzzRDPHeader(f *testing.F) {
	b, _ := RDPHeader{Confirm: []byte{3, 0, 0, 11}, Certificates: [][]byte{{0x30, 0}}, Channels: []string{"cliprdr"}}.Marshal()
	f.Add(b)
	f.Add([]byte(RDPMagic))
	f.Add(append([]byte(RDPMagic), 0, 0, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseRDPHeader(in)
		if err != nil {
			return
		}
		out, err := h.Marshal()
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", h, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip %x -> %x", in, out)
		}
	})
}

// FuzzPeekRDP: any stream peeks without panic, and never allocates more
// than the header limit.
func FuzzPeekRDP(f *testing.F) {
	b, _ := RDPHeader{Confirm: []byte{3, 0, 0, 11}, Channels: []string{"rdpsnd"}}.Marshal()
	f.Add(append(append([]byte(Magic), 0, 0, 0, byte(len(b))), b...))
	f.Add(append([]byte(Magic), 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, in []byte) {
		if h, ok := PeekRDP(bytes.NewReader(in)); ok {
			if _, err := h.Marshal(); err != nil {
				t.Fatalf("peeked %+v does not marshal: %v", h, err)
			}
		}
	})
}
