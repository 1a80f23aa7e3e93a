package forward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// muxFrame is one yamux frame: header and, for data, body.
func muxFrame(typ byte, flags uint16, stream uint32, body []byte, length uint32) []byte {
	b := []byte{0, typ}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, body...)
}

// TestFrameScanner: pings are counted whichever way the stream is cut,
// a data frame's body is passed over even when it looks like a ping, and
// ping answers (ACK), window updates and go-aways are not counted.
func TestFrameScanner(t *testing.T) {
	ping := muxFrame(muxTypePing, muxFlagSYN, 0, nil, 1)
	body := bytes.Repeat(ping, 5) // a body full of what would be pings
	var stream []byte
	stream = append(stream, muxFrame(1, muxFlagSYN, 1, nil, 256<<10)...) // window update
	stream = append(stream, muxFrame(muxTypeData, 0, 1, body, uint32(len(body)))...)
	stream = append(stream, ping...)
	stream = append(stream, muxFrame(muxTypePing, 2, 0, nil, 1)...) // ACK
	stream = append(stream, ping...)
	stream = append(stream, muxFrame(3, 0, 0, nil, 0)...) // go away
	for _, cut := range []int{1, 2, 5, 11, 12, 13, 64, len(stream)} {
		var s frameScanner
		n := 0
		for p := stream; len(p) > 0; {
			k := min(cut, len(p))
			n += s.feed(p[:k])
			p = p[k:]
		}
		if n != 2 {
			t.Errorf("cut every %d bytes: %d pings, want 2", cut, n)
		}
	}
	var s frameScanner
	if s.feed([]byte{1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}); !s.lost {
		t.Error("a header of another version: still scanning")
	}
}

// TestGuardPings: a burst passes, a flood fails the read with
// ErrPingFlood and tells onFlood once.
func TestGuardPings(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	flooded := 0
	g := GuardPings(b, func() { flooded++ })
	ping := muxFrame(muxTypePing, muxFlagSYN, 0, nil, 1)
	go func() {
		a.Write(bytes.Repeat(ping, pingBurst))
		a.Write(bytes.Repeat(ping, 100))
	}()
	buf := make([]byte, len(ping)*pingBurst)
	if _, err := io.ReadFull(g, buf); err != nil {
		t.Fatalf("the burst: %v", err)
	}
	var err error
	for err == nil {
		_, err = g.Read(buf)
	}
	if !errors.Is(err, ErrPingFlood) || flooded != 1 {
		t.Fatalf("the flood: %v, onFlood called %d times", err, flooded)
	}
	if _, err := g.Read(buf); !errors.Is(err, ErrPingFlood) {
		t.Fatalf("after the flood: %v", err)
	}
}

// FuzzFrameScanner: the scanner counts the same pings whatever the cuts
// (differential against one feed of the whole stream), and never panics.
func FuzzFrameScanner(f *testing.F) {
	ping := muxFrame(muxTypePing, muxFlagSYN, 0, nil, 1)
	f.Add(append(muxFrame(muxTypeData, 0, 1, []byte("abc"), 3), ping...), uint8(3))
	f.Add(bytes.Repeat(ping, 3), uint8(1))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 255, 255, 255, 255}, uint8(7))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		var whole frameScanner
		want := whole.feed(stream)
		var s frameScanner
		got := 0
		step := int(cut) + 1
		for p := stream; len(p) > 0; {
			k := min(step, len(p))
			got += s.feed(p[:k])
			p = p[k:]
		}
		if got != want || s != whole {
			t.Fatalf("cut every %d: %d pings (state %+v), whole: %d (state %+v)", step, got, s, want, whole)
		}
	})
}

// BenchmarkGuardPings: what the guard adds to reading the tunnel (data
// frames of 16 KiB, as yamux sends a large response).
func BenchmarkGuardPings(b *testing.B) {
	body := make([]byte, 16<<10)
	frame := muxFrame(muxTypeData, 0, 1, body, uint32(len(body)))
	b.SetBytes(int64(len(frame)))
	var s frameScanner
	for b.Loop() {
		if s.feed(frame) != 0 {
			b.Fatal("a ping in data")
		}
	}
}
