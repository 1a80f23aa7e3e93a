package rdpfilter

import (
	"slices"
	"testing"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// BenchmarkFeed is the filter on a client's steady traffic once the
// connection is up: fast-path input events (a key or a mouse move is a
// few bytes each) in 16 KiB reads, as the relay feeds them, with and
// without the NLA policy (which adds one check per frame until the
// Client Info PDU has gone by).
func BenchmarkFeed(b *testing.B) {
	// A fast-path input PDU: header (one event), length, a mouse event.
	ev := []byte{0x04, 0x09, 0x20, 0x00, 0x08, 0x10, 0x00, 0x20, 0x00}
	var chunk []byte
	for len(chunk)+len(ev) <= 16<<10 {
		chunk = append(chunk, ev...)
	}
	for _, c := range []struct {
		name string
		p    Policy
	}{{"plain", Policy{ClipIn: true, ClipOut: true}}, {"nla", Policy{ClipIn: true, ClipOut: true, NLA: true}}} {
		b.Run(c.name, func(b *testing.B) {
			s := New(c.p)
			if _, err := s.Feed(realtest.RDPConnectInitial(800, 600, "cliprdr")); err != nil {
				b.Fatal(err)
			}
			in := slices.Clone(chunk)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				copy(in, chunk)
				if _, err := s.Feed(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
