package recording

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// frame builds a WebSocket frame, written apart from the parser.
func frame(op byte, fin bool, mask []byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	m := byte(0)
	if mask != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if mask != nil {
		out = append(out, mask...)
		p := append([]byte(nil), payload...)
		for i := range p {
			p[i] ^= mask[i%4]
		}
		payload = p
	}
	return append(out, payload...)
}

func feedAll(in []byte, step int) ([]byte, bool) {
	var got []byte
	p := FrameParser{Sink: func(b []byte) { got = append(got, b...) }}
	for len(in) > 0 {
		n := min(step, len(in))
		p.Feed(in[:n])
		in = in[n:]
	}
	return got, p.Failed()
}

func TestFrameParser(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000) // 64-bit length
	mid := bytes.Repeat([]byte("m"), 300)           // 16-bit length
	in := bytes.Join([][]byte{
		frame(2, true, nil, []byte("RFB 003.008\n")),
		frame(9, true, nil, []byte("ping")), // control: not recorded
		frame(2, false, nil, []byte("part1-")),
		frame(10, true, nil, nil), // control between fragments
		frame(0, true, nil, []byte("part2")),
		frame(2, true, []byte{1, 2, 3, 4}, []byte("masked")),
		frame(2, true, nil, mid),
		frame(2, true, nil, big),
		frame(2, true, nil, nil),
		frame(8, true, nil, []byte{3, 232}),
	}, nil)
	want := bytes.Join([][]byte{[]byte("RFB 003.008\npart1-part2masked"), mid, big}, nil)
	for _, step := range []int{1, 3, 7, 4096, len(in)} {
		got, failed := feedAll(in, step)
		if failed || !bytes.Equal(got, want) {
			t.Fatalf("step %d: failed %v, got %d bytes, want %d", step, failed, len(got), len(want))
		}
	}
	if _, failed := feedAll(frame(5, true, nil, []byte("x")), 1); !failed {
		t.Fatal("reserved opcode 5 parsed")
	}
	huge := []byte{0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0}
	if _, failed := feedAll(huge, 3); !failed {
		t.Fatal("a length over 2^62 parsed")
	}
}

// FuzzFrameParser: any bytes, fed in any pieces, give the same payload,
// and never panic.
func FuzzFrameParser(f *testing.F) {
	f.Add(frame(2, true, nil, []byte("abc")), 1)
	f.Add(frame(2, false, []byte{9, 9, 9, 9}, []byte("abc")), 2)
	f.Add([]byte{0x82, 126, 0, 1}, 3)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		step = 1 + (step&0xffff)%64
		all, fa := feedAll(in, len(in)+1)
		part, fp := feedAll(in, step)
		if fa != fp || !bytes.Equal(all, part) {
			t.Fatalf("step %d: %x/%v vs whole %x/%v", step, part, fp, all, fa)
		}
	})
}

func readRecording(t *testing.T, path string) ([]Block, bool, Meta) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	blocks, ended, err := Read(zr)
	if err != nil {
		t.Fatal(err)
	}
	var m Meta
	b, err := os.ReadFile(path[:len(path)-len(".fbs.gz")] + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if m.SHA256 != hex.EncodeToString(sum[:]) || m.FileBytes != int64(len(raw)) {
		t.Fatalf("sidecar says %s, %d bytes; the file is %x, %d bytes", m.SHA256, m.FileBytes, sum, len(raw))
	}
	return blocks, ended, m
}

func TestWriterRoundTrip(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{Session: "s-1", User: "alice", Connector: "console"}, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("RFB 003.008\n"))
	clock = clock.Add(1500 * time.Millisecond)
	w.Write([]byte("abcde"))
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	blocks, ended, m := readRecording(t, path)
	if !ended || len(blocks) != 2 || string(blocks[0].Data) != "RFB 003.008\n" || string(blocks[1].Data) != "abcde" || blocks[1].MS != 1500 {
		t.Fatalf("blocks %+v, ended %v", blocks, ended)
	}
	if m.End != "closed" || m.RFBBytes != 17 || m.DurationMS != 1500 || m.Session != "s-1" || m.User != "alice" {
		t.Fatalf("sidecar %+v", m)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, err := Create(path, Meta{}, 0, nil); err == nil {
		t.Fatal("Create overwrote an existing recording")
	}
}

// TestWriterCap: past the cap nothing more is recorded, the end block is
// there and the sidecar says why. The cap counts each block's 8 bytes of
// framing and its padding: 16 and 12 bytes for the first two here.
func TestWriterCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{}, 28, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"12345", "678", "90ab", "cd"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v: a capped recording must not fail the relay", n, err)
		}
	}
	w.Close()
	blocks, ended, m := readRecording(t, path)
	if !ended || len(blocks) != 2 || m.End != "size cap" || m.RFBBytes != 8 {
		t.Fatalf("blocks %+v ended %v meta %+v", blocks, ended, m)
	}
}

// TestReadCutShort: a file without its end block reads as cut short.
func TestReadCutShort(t *testing.T) {
	in := []byte(Magic)
	in = binary.BigEndian.AppendUint32(in, 3)
	in = append(in, 'a', 'b', 'c', 0, 0, 0, 0, 7)
	blocks, ended, err := Read(bytes.NewReader(in))
	if err != nil || ended || len(blocks) != 1 || blocks[0].MS != 7 {
		t.Fatalf("%+v %v %v", blocks, ended, err)
	}
	if _, _, err := Read(bytes.NewReader([]byte("FBS 002.000\n"))); err == nil {
		t.Fatal("wrong magic read")
	}
}

// FuzzRead: hostile recordings (a replaced file) never panic the reader
// or make it allocate past its block limit.
func FuzzRead(f *testing.F) {
	f.Add([]byte(Magic))
	f.Add(append([]byte(Magic), 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 5))
	f.Add(append([]byte(Magic), 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, in []byte) {
		blocks, _, _ := Read(bytes.NewReader(in))
		total := 0
		for _, b := range blocks {
			total += len(b.Data)
		}
		if total > len(in) {
			t.Fatalf("%d bytes of blocks from %d bytes", total, len(in))
		}
	})
}

// rwc is a connection's read side for the benchmark: a stream of frames,
// over and over.
type rwc struct{ r *bytes.Reader }

func (c *rwc) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *rwc) Write(p []byte) (int, error) { return len(p), nil }
func (c *rwc) Close() error                { return nil }

// BenchmarkTap is the gateway's relay of a viewer's WebSocket from the
// connector, with the recording off (a plain copy) and on (the tap
// parsing frames and the writer compressing them to a file), on two
// kinds of screen data: "zrle" is incompressible (already compressed
// updates), "raw" is a desktop's flat colours. Compare the MB/s of off
// and on in one run.
func BenchmarkTap(b *testing.B) {
	zrle := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(zrle); i += 8 {
		binary.LittleEndian.PutUint64(zrle[i:], rng.Uint64())
	}
	raw := bytes.Repeat([]byte{0x20, 0x30, 0x40, 0, 0x20, 0x30, 0x40, 0, 0xff, 0xff, 0xff, 0}, (64<<10)/12+1)
	for _, data := range []struct {
		name    string
		payload []byte
	}{{"zrle", zrle}, {"raw", raw}} {
		var stream []byte
		for p := data.payload; len(stream) < 8<<20; p = p[64<<10:] {
			if len(p) < 64<<10 {
				p = data.payload
			}
			stream = append(stream, frame(2, true, nil, p[:64<<10])...)
		}
		buf := make([]byte, 128<<10)
		for _, on := range []bool{false, true} {
			name := data.name + "/off"
			if on {
				name = data.name + "/on"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(stream)))
				dir := b.TempDir()
				var fileBytes int64
				i := 0
				for b.Loop() {
					c := &rwc{r: bytes.NewReader(stream)}
					var src io.ReadCloser = c
					var w *Writer
					if on {
						var err error
						if w, err = Create(filepath.Join(dir, fmt.Sprintf("%d.fbs.gz", i)), Meta{}, 0, nil); err != nil {
							b.Fatal(err)
						}
						src = NewTap(c, w)
					}
					i++
					if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{src}, buf); err != nil {
						b.Fatal(err)
					}
					src.Close()
					if on {
						fi, _ := os.Stat(filepath.Join(dir, fmt.Sprintf("%d.fbs.gz", i-1)))
						fileBytes += fi.Size()
					}
				}
				if on {
					b.ReportMetric(float64(fileBytes)/float64(b.N)/float64(len(stream)), "file/stream")
				}
			})
		}
	}
}

// TestWriterKeepsEverythingPastTheQueue: a stream several times what the
// writer queues for its compressor, written as fast as the caller can,
// is recorded whole and in order (Write waits rather than drops), and the
// caller's buffer is free for reuse once Write returns.
func TestWriterKeepsEverythingPastTheQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.fbs.gz")
	w, err := Create(path, Meta{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	want := sha256.New()
	buf := make([]byte, 61<<10) // not a multiple of 4: padding on every block
	n := 0
	for total := 0; total < 4*queueBytes; total += len(buf) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		want.Write(buf)
		w.Write(buf)
		n++
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	blocks, ended, _ := readRecording(t, path)
	got := sha256.New()
	for _, b := range blocks {
		got.Write(b.Data)
	}
	if !ended || len(blocks) != n || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("%d blocks of %d, ended %v, content equal %v", len(blocks), n, ended, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
}

// TestWriterCapCountsFraming: each block costs 8 bytes of framing and up
// to 3 of padding besides its data, so a server (or a connector the
// workload replaced) that sends its stream in 1-byte WebSocket frames
// made a recording 12 times the cap (and the replay, the download and
// their readers with it). The cap holds for the stream as recorded.
func TestWriterCapCountsFraming(t *testing.T) {
	const max = 64 << 10
	path := filepath.Join(t.TempDir(), "r.fbs.gz")
	w, err := Create(path, Meta{}, max, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range max {
		w.Write([]byte{'x'})
	}
	w.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		t.Fatal(err)
	}
	if limit := int64(len(Magic) + max + 8); n > limit {
		t.Fatalf("%d 1-byte blocks under a cap of %d: the stream is %d bytes", max, max, n)
	}
}
