package recording

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// viewerStream is what a noVNC viewer sends through the vnc connector:
// the handshake, then one of every message it may send, with pointer
// events at (100, 200) with button 1 and at (7, 9) with none.
func viewerStream(version string) []byte {
	var b bytes.Buffer
	b.WriteString(version)
	if version != "RFB 003.003\n" {
		b.WriteByte(1) // security type None
	}
	b.WriteByte(1)                                                               // ClientInit: shared
	b.Write(append([]byte{0, 0, 0, 0}, make([]byte, 16)...))                     // SetPixelFormat
	b.Write([]byte{2, 0, 0, 3, 0, 0, 0, 16, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21}) // SetEncodings, 3
	b.Write([]byte{2, 0, 0, 0})                                                  // SetEncodings, none
	b.Write([]byte{3, 1, 0, 0, 0, 0, 4, 0, 3, 0})                                // FramebufferUpdateRequest
	b.Write([]byte{4, 1, 0, 0, 0, 0, 0, 0x41})                                   // KeyEvent 'A'
	b.Write([]byte{5, 1, 0, 100, 0, 200})                                        // PointerEvent
	b.Write([]byte{6, 0, 0, 0, 0, 0, 0, 5})
	b.WriteString("hello") // ClientCutText
	b.Write([]byte{6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8})
	b.Write(make([]byte, 8))                                 // extended clipboard, 8 bytes
	b.Write([]byte{248, 0, 0, 0, 0, 0, 0, 1, 4, 1, 2, 3, 4}) // ClientFence, 4 bytes
	b.Write([]byte{251, 0, 4, 0, 3, 0, 2, 0})
	b.Write(make([]byte, 32))                                   // SetDesktopSize, two screens
	b.Write([]byte{255, 0, 0, 1, 0, 0, 0, 0x41, 0, 0, 0, 0x1e}) // QEMU extended key
	b.Write([]byte{150, 1, 0, 0, 0, 0, 4, 0, 3, 0})             // EnableContinuousUpdates
	b.Write([]byte{250, 0, 1, 2})                               // xvp
	b.Write([]byte{5, 0, 0, 7, 0, 9})                           // PointerEvent
	return b.Bytes()
}

// TestClientScanner: every client message a viewer sends is framed, in
// pieces of any size, and only the pointer events come out; a message it
// does not know stops it.
func TestClientScanner(t *testing.T) {
	for _, v := range []string{"RFB 003.008\n", "RFB 003.003\n"} {
		stream := viewerStream(v)
		for size := 1; size <= len(stream); size++ {
			var got []PointerEvent
			c := ClientScanner{Pointer: func(x, y uint16, b byte) { got = append(got, PointerEvent{X: x, Y: y, Buttons: b}) }}
			for p := stream; len(p) > 0; p = p[min(size, len(p)):] {
				c.Feed(p[:min(size, len(p))])
			}
			want := []PointerEvent{{X: 100, Y: 200, Buttons: 1}, {X: 7, Y: 9}}
			if c.Failed() || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("%q in pieces of %d: %+v, failed %v", v, size, got, c.Failed())
			}
		}
	}
	var c ClientScanner
	c.Feed(append(viewerStream("RFB 003.008\n"), 77, 5, 0, 0, 0, 0, 0))
	if !c.Failed() {
		t.Fatal("an unknown message type did not stop the scanner")
	}
}

// TestPointerTrack: a recording's pointer track holds the viewer's moves
// with their times, keeps a move within 20 ms only when the buttons
// change, and is 0600 beside the recording.
func TestPointerTrack(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{}, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	w.Pointer(1, 2, 0)
	clock = clock.Add(5 * time.Millisecond)
	w.Pointer(3, 4, 0) // too soon, same buttons: left out
	w.Pointer(3, 4, 1) // a press: kept
	clock = clock.Add(30 * time.Millisecond)
	w.Pointer(50, 60, 0)
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	w.Pointer(9, 9, 0) // after Close: ignored
	f, err := os.Open(strings.TrimSuffix(path, ".fbs.gz") + ".pointer")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Errorf("pointer track mode %v", fi.Mode())
	}
	evs, err := ReadPointer(f)
	want := []PointerEvent{{0, 1, 2, 0}, {5, 3, 4, 1}, {35, 50, 60, 0}}
	if err != nil || len(evs) != len(want) || m.PointerEvents != 3 {
		t.Fatalf("track %+v (%v), sidecar says %d", evs, err, m.PointerEvents)
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Fatalf("event %d: %+v, want %+v", i, evs[i], want[i])
		}
	}
}

// TestTapRecordsPointer: through the tap, the viewer's masked WebSocket
// frames (as a browser sends them) give the pointer track, and a stream
// the scanner cannot read stops the track, not the connection.
func TestTapRecordsPointer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	tap := NewTap(&rwc{r: bytes.NewReader(nil)}, w)
	stream := viewerStream("RFB 003.008\n")
	for p := stream; len(p) > 0; p = p[min(7, len(p)):] {
		if _, err := tap.Write(frame(2, true, []byte{1, 2, 3, 4}, p[:min(7, len(p))])); err != nil {
			t.Fatal(err)
		}
	}
	tap.Write(frame(2, true, []byte{9, 9, 9, 9}, []byte{77, 0, 0}))
	if n, err := tap.Write([]byte("more")); n != 4 || err != nil {
		t.Fatalf("the connection stopped: %d %v", n, err)
	}
	tap.Close()
	b, _ := os.ReadFile(strings.TrimSuffix(path, ".fbs.gz") + ".json")
	if !bytes.Contains(b, []byte(`"pointer_events": 2`)) || !bytes.Contains(b, []byte(`"pointer_end": "unparseable"`)) {
		t.Fatalf("sidecar:\n%s", b)
	}
}

// FuzzClientScanner: any bytes, in any pieces, never panic, and every
// pointer event costs at least the 6 bytes of a PointerEvent.
func FuzzClientScanner(f *testing.F) {
	f.Add(viewerStream("RFB 003.008\n"), uint8(3))
	f.Add(viewerStream("RFB 003.003\n"), uint8(1))
	f.Add([]byte("RFB 003.008\n\x01\x01\x06\x00\x00\x00\x80\x00\x00\x00"), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		n := 0
		c := ClientScanner{Pointer: func(uint16, uint16, byte) { n++ }}
		step := max(1, int(size))
		for p := data; len(p) > 0; p = p[min(step, len(p)):] {
			c.Feed(p[:min(step, len(p))])
		}
		if n*6 > len(data) {
			t.Fatalf("%d pointer events from %d bytes", n, len(data))
		}
	})
}

// FuzzReadPointer: any file reads without panic into whole records.
func FuzzReadPointer(f *testing.F) {
	f.Add(binary.BigEndian.AppendUint32(nil, 7))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := ReadPointer(bytes.NewReader(data))
		if err == nil && len(evs) != len(data)/pointerRecord {
			t.Fatalf("%d events from %d bytes", len(evs), len(data))
		}
	})
}

// TestTapEndsAtCap: the server's frames pass while the recording holds
// them; the read that goes past the size cap is held back and ends the
// relay (ErrCapped), so the viewer never sees a byte unrecorded.
func TestTapEndsAtCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{}, 64, nil)
	if err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for i := range 4 {
		in.Write(frame(2, true, nil, bytes.Repeat([]byte{byte('a' + i)}, 20)))
	}
	tap := NewTap(&rwc{r: bytes.NewReader(in.Bytes())}, w)
	var seen []byte
	buf := make([]byte, 22) // one frame a read
	for {
		n, err := tap.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			if !errors.Is(err, ErrCapped) {
				t.Fatalf("read: %v, want ErrCapped", err)
			}
			break
		}
	}
	tap.Close()
	blocks, ended, m := readRecording(t, path)
	var recorded []byte
	for _, b := range blocks {
		recorded = append(recorded, b.Data...)
	}
	// Two 20-byte blocks (28 bytes framed each) fit in 64; the third does not.
	if !ended || m.End != "size cap" || len(blocks) != 2 {
		t.Fatalf("blocks %d, ended %v, end %q", len(blocks), ended, m.End)
	}
	if len(seen) != 2*22 || !bytes.Contains(seen, recorded[20:]) || bytes.Contains(seen, bytes.Repeat([]byte{'c'}, 20)) {
		t.Fatalf("the viewer saw %q; recorded %q", seen, recorded)
	}
}
