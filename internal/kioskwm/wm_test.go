package kioskwm

import (
	"encoding/binary"
	"testing"
)

// setupData is a setup reply's data for one screen of w×h with root
// window root, after a vendor string and formats.
func setupData(vendor string, formats int, root uint32, w, h uint16) []byte {
	d := make([]byte, 32)
	binary.LittleEndian.PutUint16(d[16:], uint16(len(vendor)))
	d[20], d[21] = 1, byte(formats)
	v := []byte(vendor)
	for len(v)%4 != 0 {
		v = append(v, 0)
	}
	d = append(d, v...)
	d = append(d, make([]byte, 8*formats)...)
	scr := make([]byte, 40)
	binary.LittleEndian.PutUint32(scr, root)
	binary.LittleEndian.PutUint16(scr[20:], w)
	binary.LittleEndian.PutUint16(scr[22:], h)
	return append(d, scr...)
}

func TestParseSetup(t *testing.T) {
	root, w, h, err := parseSetup(setupData("The X.Org Foundation", 7, 0x3a1, 1280, 800))
	if err != nil || root != 0x3a1 || w != 1280 || h != 800 {
		t.Fatalf("got %#x %dx%d %v", root, w, h, err)
	}
	full := setupData("TigerVNC", 2, 1, 2, 3)
	for _, n := range []int{0, 31, len(full) - 17} {
		if _, _, _, err := parseSetup(full[:n]); err == nil {
			t.Errorf("%d bytes of %d: accepted", n, len(full))
		}
	}
	noScreen := setupData("x", 0, 1, 2, 3)
	noScreen[20] = 0
	if _, _, _, err := parseSetup(noScreen); err == nil {
		t.Error("a server with no screen: accepted")
	}
}

// FuzzParseSetup: no setup reply makes the parser panic or read past it.
func FuzzParseSetup(f *testing.F) {
	f.Add(setupData("TigerVNC", 7, 0x3a1, 1280, 800))
	f.Add(setupData("", 0, 1, 1, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseSetup(data)
	})
}
