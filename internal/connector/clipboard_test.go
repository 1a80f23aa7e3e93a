package connector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// Server messages for tests, written apart from the filter's code.
var (
	srvCutText   = append([]byte{3, 0, 0, 0, 0, 0, 0, 11}, "out-secret1"...)
	srvExtNotify = append([]byte{3, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc}, 0x08, 0, 0, 1) // length -4: notify, text
	srvBell      = []byte{2}
	srvEndCU     = []byte{150}
	srvFence     = []byte{248, 0, 0, 0, 0, 0, 0, 3, 2, 0xaa, 0xbb}
	srvXvp       = []byte{250, 0, 1, 1}
	srvColours   = append([]byte{1, 0, 0, 0, 0, 2}, make([]byte, 12)...)
)

// rectHdr is a rectangle header.
func rectHdr(w, h uint16, enc int32) []byte {
	b := []byte{0, 1, 0, 2}
	b = binary.BigEndian.AppendUint16(b, w)
	b = binary.BigEndian.AppendUint16(b, h)
	return binary.BigEndian.AppendUint32(b, uint32(enc))
}

// fbUpdate is a FramebufferUpdate of the given whole rectangles.
func fbUpdate(n uint16, rects ...[]byte) []byte {
	return cat(append([]byte{0, 0}, byte(n>>8), byte(n)), cat(rects...))
}

var (
	rawRect    = cat(rectHdr(2, 3, encRaw), bytes.Repeat([]byte{7}, 2*3*4))
	copyRect   = cat(rectHdr(5, 5, encCopyRect), []byte{0, 1, 0, 1})
	rreRect    = cat(rectHdr(5, 5, encRRE), []byte{0, 0, 0, 2}, make([]byte, 4), make([]byte, 2*12))
	zrleRect   = cat(rectHdr(64, 64, encZRLE), []byte{0, 0, 0, 5}, []byte("zzzzz"))
	zlibRect   = cat(rectHdr(64, 64, encZlib), []byte{0, 0, 0, 2}, []byte("zz"))
	cursorRect = cat(rectHdr(9, 2, encCursor), make([]byte, 9*2*4+2*2))
	nameRect   = cat(rectHdr(0, 0, encDesktopName), []byte{0, 0, 0, 3}, []byte("abc"))
	extSzRect  = cat(rectHdr(640, 480, encExtendedDesktopSize), []byte{1, 0, 0, 0}, make([]byte, 16))
	sizeRect   = rectHdr(640, 480, encDesktopSize)
	lastRect   = rectHdr(0, 0, encLastRect)
	tightRect  = cat(rectHdr(8, 8, 7), []byte{0x80, 1, 2, 3})
)

func TestServerFilter(t *testing.T) {
	allowed := cat(
		fbUpdate(4, rawRect, copyRect, rreRect, zrleRect),
		srvBell, srvEndCU, srvFence, srvXvp, srvColours,
		fbUpdate(5, zlibRect, cursorRect, nameRect, extSzRect, sizeRect),
		fbUpdate(0xffff, rawRect, lastRect),
		fbUpdate(0),
	)
	tests := []struct {
		name    string
		cutText bool
		in      []byte
		want    []byte
		wantErr error // nil means a clean io.EOF
		drops   int64
	}{
		{"empty", false, nil, nil, nil, 0},
		{"allowed pass unchanged", false, allowed, allowed, nil, 0},
		{"cut text dropped", false, cat(srvBell, srvCutText, srvBell), cat(srvBell, srvBell), nil, 1},
		{"extended clipboard dropped", false, cat(srvExtNotify, fbUpdate(1, rawRect)), fbUpdate(1, rawRect), nil, 1},
		{"cut text passes when out is allowed", true, cat(srvCutText, srvExtNotify, srvBell), cat(srvCutText, srvExtNotify, srvBell), nil, 0},
		{"cut text hidden in rect data is data", false, fbUpdate(1, cat(rectHdr(2, 1, encRaw), srvCutText[:8])), fbUpdate(1, cat(rectHdr(2, 1, encRaw), srvCutText[:8])), nil, 0},
		{"tight closes", false, cat(srvBell, fbUpdate(1, tightRect)), cat(srvBell, fbUpdate(1)[:4]), errClipboardRefused, 0},
		{"unknown message closes", false, cat(srvBell, []byte{99}), srvBell, errClipboardRefused, 0},
		{"oversized fence closes", false, []byte{248, 0, 0, 0, 0, 0, 0, 0, maxFenceData + 1}, nil, errClipboardRefused, 0},
		{"oversized desktop name closes", false, fbUpdate(1, cat(rectHdr(0, 0, encDesktopName), []byte{0, 1, 0, 1})), fbUpdate(1)[:4], errClipboardRefused, 0},
		{"truncated cut text", false, srvCutText[:10], nil, io.ErrUnexpectedEOF, 1},
		{"truncated rect data", false, fbUpdate(1, rawRect[:20]), fbUpdate(1, rawRect[:20]), io.ErrUnexpectedEOF, 0},
		{"truncated update header", false, []byte{0, 0}, nil, io.ErrUnexpectedEOF, 0},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				st := &clipStats{}
				got, err := io.ReadAll(newServerFilter(wrap(bytes.NewReader(tt.in)), tt.cutText, st))
				if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("got  %x\nwant %x", got, tt.want)
				}
				if n := st.outDropped.Load(); n != tt.drops {
					t.Fatalf("%d drops counted, want %d", n, tt.drops)
				}
			})
		}
	}
}

// TestServerFilterOneByteCaller: the caller's buffer may be one byte; rect
// data is then passed a byte at a time, never more than counted.
func TestServerFilterOneByteCaller(t *testing.T) {
	in := cat(fbUpdate(2, rawRect, zrleRect), srvCutText, srvBell)
	want := cat(fbUpdate(2, rawRect, zrleRect), srvBell)
	f := newServerFilter(bytes.NewReader(in), false, &clipStats{})
	var got []byte
	var b [1]byte
	for {
		n, err := f.Read(b[:])
		got = append(got, b[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
}

func TestClientFilterPolicy(t *testing.T) {
	tight := []byte{msgSetEncodings, 0, 0, 5,
		0, 0, 0, 7, // Tight: removed
		0, 0, 0, 16, // ZRLE
		0xc0, 0xa1, 0xe5, 0xce, // Extended Clipboard: removed
		0xff, 0xff, 0xff, 0x21, // DesktopSize (-223)
		0, 0, 0, 5, // Hextile: removed
	}
	kept := []byte{msgSetEncodings, 0, 0, 2, 0, 0, 0, 16, 0xff, 0xff, 0xff, 0x21}
	pf16 := append([]byte{msgSetPixelFormat, 0, 0, 0}, 16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0)
	input := cat(keyEvent, pointerEvent, qemuKeyEvent, setDesktopSz, xvpReboot)
	tests := []struct {
		name       string
		input, cut bool
		in, want   []byte
		wantErr    error
		drops      int64
	}{
		{"control, in refused: input passes, cut text dropped", true, false,
			cat(input, cutText, extClipCaps, fbUpdateReq), cat(input, fbUpdateReq), nil, 2},
		{"control, in allowed: cut text passes", true, true,
			cat(cutText, extClipCaps, fbUpdateReq), cat(cutText, extClipCaps, fbUpdateReq), nil, 0},
		{"view: input and cut text dropped", false, false,
			cat(input, cutText, fbUpdateReq), fbUpdateReq, nil, 1},
		{"encodings the server filter cannot measure are removed", true, false, tight, kept, nil, 0},
		{"32 bpp pixel format passes", true, false, setPixelFmt, setPixelFmt, nil, 0},
		{"16 bpp pixel format closes", true, false, cat(fbUpdateReq, pf16), fbUpdateReq, errClipboardRefused, 0},
		{"qemu audio closes", true, false, qemuAudioOn, nil, errClipboardRefused, 0},
		{"unknown type closes", true, false, []byte{253, 0}, nil, errClipboardRefused, 0},
		{"oversized cut text closes", true, true, binary.BigEndian.AppendUint32([]byte{msgClientCutText, 0, 0, 0}, maxCutText+1), nil, errClipboardRefused, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &clipStats{}
			got, err := io.ReadAll(newClientFilter(iotest.HalfReader(bytes.NewReader(tt.in)), &clientPolicy{input: tt.input, cutText: tt.cut, stats: st}))
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got  %x\nwant %x", got, tt.want)
			}
			if n := st.inDropped.Load(); n != tt.drops {
				t.Fatalf("%d drops counted, want %d", n, tt.drops)
			}
		})
	}
}

// serverMsg is one parsed server message: its type, and for ServerCutText
// nothing else matters.
type serverMsg struct{ typ byte }

// parseServerMessages parses a server stream independently of the filter
// (the encodings the filter keeps, at 4 bytes per pixel), failing on
// anything incomplete.
func parseServerMessages(b []byte) ([]serverMsg, error) {
	var out []serverMsg
	need := func(n int) ([]byte, error) {
		if len(b) < n {
			return nil, io.ErrUnexpectedEOF
		}
		h := b[:n]
		b = b[n:]
		return h, nil
	}
	u32 := func(h []byte) int { return int(binary.BigEndian.Uint32(h)) }
	for len(b) > 0 {
		t := b[0]
		b = b[1:]
		out = append(out, serverMsg{t})
		switch t {
		case 0:
			h, err := need(3)
			if err != nil {
				return nil, err
			}
			n := int(binary.BigEndian.Uint16(h[1:]))
			for i := 0; i < n; i++ {
				r, err := need(12)
				if err != nil {
					return nil, err
				}
				w, hh := int(binary.BigEndian.Uint16(r[4:])), int(binary.BigEndian.Uint16(r[6:]))
				var skip int
				switch enc := int32(binary.BigEndian.Uint32(r[8:])); enc {
				case encRaw:
					skip = w * hh * 4
				case encCopyRect:
					skip = 4
				case encRRE:
					s, err := need(8)
					if err != nil {
						return nil, err
					}
					skip = u32(s) * 12
				case encZlib, encZRLE, encDesktopName:
					s, err := need(4)
					if err != nil {
						return nil, err
					}
					skip = u32(s)
				case encCursor:
					skip = w*hh*4 + (w+7)/8*hh
				case encExtendedDesktopSize:
					s, err := need(4)
					if err != nil {
						return nil, err
					}
					skip = 16 * int(s[0])
				case encLastRect:
					n = 0
				case encDesktopSize, encQEMUExtendedKey, encXvp, encFence, encContinuousUpdates:
				default:
					return nil, errors.New("unexpected encoding")
				}
				if _, err := need(skip); err != nil {
					return nil, err
				}
			}
		case 1:
			h, err := need(5)
			if err != nil {
				return nil, err
			}
			if _, err := need(6 * int(binary.BigEndian.Uint16(h[3:]))); err != nil {
				return nil, err
			}
		case 2, 150:
		case 3:
			h, err := need(7)
			if err != nil {
				return nil, err
			}
			n := int(int32(binary.BigEndian.Uint32(h[3:])))
			if _, err := need(max(n, -n)); err != nil {
				return nil, err
			}
		case 248:
			h, err := need(8)
			if err != nil {
				return nil, err
			}
			if _, err := need(int(h[7])); err != nil {
				return nil, err
			}
		case 250:
			if _, err := need(3); err != nil {
				return nil, err
			}
		default:
			return nil, errors.New("unexpected message type")
		}
	}
	return out, nil
}

// FuzzServerFilter: whatever a hostile server (the session's workload)
// sends, the filter never panics; what it lets through with out refused
// parses as whole messages and none is ServerCutText (classic or
// extended); the result does not depend on how reads are split.
func FuzzServerFilter(f *testing.F) {
	for _, seed := range [][]byte{
		nil, srvCutText, srvExtNotify, srvBell, srvFence, srvXvp, srvColours,
		fbUpdate(4, rawRect, copyRect, rreRect, zrleRect),
		fbUpdate(5, zlibRect, cursorRect, nameRect, extSzRect, sizeRect),
		fbUpdate(0xffff, rawRect, lastRect), fbUpdate(1, tightRect),
		cat(srvBell, srvCutText, fbUpdate(1, rawRect)), {99}, srvCutText[:9],
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := io.ReadAll(newServerFilter(bytes.NewReader(in), false, &clipStats{}))
		msgs, perr := parseServerMessages(out)
		if perr != nil && err == nil {
			t.Fatalf("output of a clean stream does not parse: %v\nin  %x\nout %x", perr, in, out)
		}
		for _, m := range msgs {
			if m.typ == smsgServerCutText {
				t.Fatalf("ServerCutText passed the filter\nin  %x\nout %x", in, out)
			}
		}
		out1, err1 := io.ReadAll(newServerFilter(iotest.OneByteReader(bytes.NewReader(in)), false, &clipStats{}))
		if !bytes.Equal(out, out1) || (err == nil) != (err1 == nil) {
			t.Fatalf("one-byte reads differ: %x, %v vs %x, %v", out1, err1, out, err)
		}
	})
}

// FuzzClipClientFilter: whatever a client sends, the control-mode filter
// with the inward direction refused never panics; what it lets through
// parses as whole messages, none is ClientCutText, every SetPixelFormat
// keeps 32 bits per pixel and every SetEncodings lists only encodings the
// server filter can measure.
func FuzzClipClientFilter(f *testing.F) {
	for _, seed := range [][]byte{
		nil, keyEvent, pointerEvent, cutText, extClipCaps, fbUpdateReq, setEncodings, setPixelFmt,
		qemuKeyEvent, setDesktopSz, xvpReboot, contUpdates, clientFence,
		cat(fbUpdateReq, keyEvent, cutText, fbUpdateReq),
		{msgSetEncodings, 0, 0, 2, 0, 0, 0, 7, 0xc0, 0xa1, 0xe5, 0xce},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _ := io.ReadAll(newClientFilter(bytes.NewReader(in), &clientPolicy{input: true, stats: &clipStats{}}))
		msgs, err := parseClientMessages(out)
		if err != nil {
			t.Fatalf("output does not parse: %v\nin  %x\nout %x", err, in, out)
		}
		for _, m := range msgs {
			rest := m.raw
			switch m.typ {
			case msgClientCutText:
				t.Fatalf("ClientCutText passed the filter\nin  %x\nout %x", in, out)
			case msgSetPixelFormat:
				if rest[4] != 32 {
					t.Fatalf("SetPixelFormat with %d bpp passed\nin  %x\nout %x", rest[4], in, out)
				}
			case msgSetEncodings:
				n := int(binary.BigEndian.Uint16(rest[2:]))
				for i := range n {
					if e := int32(binary.BigEndian.Uint32(rest[4+4*i:])); !keptEncoding(e) {
						t.Fatalf("encoding %d passed\nin  %x\nout %x", e, in, out)
					}
				}
			}
		}
	})
}

// BenchmarkServerFilter is the clipboard filter's server half on a stream
// like a busy desktop's under ZRLE: updates of a few 64x64 rectangles of
// 2-6 KiB each, with a cut text now and then; "copy" is the same bytes
// through no filter, for the ratio. The relay's 128 KiB buffer is the
// caller's.
func BenchmarkServerFilter(b *testing.B) {
	var stream []byte
	for i := 0; len(stream) < 4<<20; i++ {
		var rects [][]byte
		for j := range 6 {
			n := 2048 + (i*7+j*1031)%4096
			rects = append(rects, cat(rectHdr(64, 64, encZRLE), binary.BigEndian.AppendUint32(nil, uint32(n)), make([]byte, n)))
		}
		stream = append(stream, fbUpdate(uint16(len(rects)), rects...)...)
		if i%50 == 0 {
			stream = append(stream, srvCutText...)
		}
	}
	buf := make([]byte, 128<<10)
	for _, mode := range []string{"copy", "filter"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			r := bytes.NewReader(stream)
			for b.Loop() {
				r.Reset(stream)
				var src io.Reader = r
				if mode == "filter" {
					src = newServerFilter(r, false, &clipStats{})
				}
				if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{src}, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
