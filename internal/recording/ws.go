package recording

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// FrameParser takes the bytes of one direction of a WebSocket connection
// (RFC 6455 §5.2), in pieces of any size, and hands the payload of its
// data frames (binary, text and their continuations) to Sink, unmasked.
// Control frames are skipped. A stream it cannot read (a reserved opcode,
// a length over 2^63) stops it for good: Failed then says so. It parses
// only lengths, so hostile bytes cost it nothing but their reading.
type FrameParser struct {
	Sink func([]byte)

	hdr     [14]byte
	have    int   // header bytes collected
	need    int   // header bytes needed (2 until the second byte is seen)
	left    int64 // payload bytes of the current frame still to come
	data    bool  // the current frame's payload is recorded
	inData  bool  // a data message is open (for its continuations)
	masked  bool
	key     [4]byte
	off     int // position in the mask key
	failed  bool
	started bool
}

// Failed reports whether the parser met something it could not read.
func (f *FrameParser) Failed() bool { return f.failed }

// Feed parses p.
func (f *FrameParser) Feed(p []byte) {
	for len(p) > 0 && !f.failed {
		if f.left > 0 {
			n := int(min(int64(len(p)), f.left))
			if f.data && f.Sink != nil {
				chunk := p[:n]
				if f.masked {
					chunk = append([]byte(nil), chunk...)
					for i := range chunk {
						chunk[i] ^= f.key[f.off&3]
						f.off++
					}
				}
				f.Sink(chunk)
			}
			f.left -= int64(n)
			p = p[n:]
			continue
		}
		if !f.started {
			f.started, f.have, f.need = true, 0, 2
		}
		n := min(len(p), f.need-f.have)
		copy(f.hdr[f.have:], p[:n])
		f.have += n
		p = p[n:]
		if f.have < f.need {
			continue
		}
		if f.need == 2 {
			f.need += map[byte]int{126: 2, 127: 8}[f.hdr[1]&0x7f]
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
			if f.have < f.need {
				continue
			}
		}
		f.frame()
	}
}

// frame interprets a complete header.
func (f *FrameParser) frame() {
	op := f.hdr[0] & 0x0f
	fin := f.hdr[0]&0x80 != 0
	var length int64
	i := 2
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		length = int64(binary.BigEndian.Uint16(f.hdr[2:]))
		i = 4
	case 127:
		u := binary.BigEndian.Uint64(f.hdr[2:])
		if u > 1<<62 {
			f.failed = true
			return
		}
		length = int64(u)
		i = 10
	default:
		length = int64(l)
	}
	f.masked = f.hdr[1]&0x80 != 0
	if f.masked {
		copy(f.key[:], f.hdr[i:i+4])
	}
	f.off = 0
	switch {
	case op == 1 || op == 2:
		f.data, f.inData = true, !fin
	case op == 0:
		f.data = f.inData
		if fin {
			f.inData = false
		}
	case op >= 8 && op <= 10:
		f.data = false
	default:
		f.failed = true
		return
	}
	f.left = length
	f.started = false
}

// Tap is the connector's side of a relayed WebSocket whose reads (the
// server's frames) are recorded; writes pass unchanged. A failure to
// record ends the recording, not the connection; the size cap ends both
// (ErrCapped).
type Tap struct {
	io.ReadWriteCloser
	p    FrameParser // the server's frames
	vp   FrameParser // the viewer's frames, for its pointer
	vs   ClientScanner
	w    *Writer
	once sync.Once
	// OnClose, if set, gets the sidecar (and any error) when the
	// connection closes.
	OnClose func(Meta, error)
}

// NewTap records rwc's reads into w.
func NewTap(rwc io.ReadWriteCloser, w *Writer) *Tap {
	t := &Tap{ReadWriteCloser: rwc, w: w}
	t.p.Sink = func(b []byte) { w.Write(b) }
	t.vs.Pointer = w.Pointer
	t.vp.Sink = t.vs.Feed
	return t
}

// Write passes the viewer's bytes on and records its pointer moves.
func (t *Tap) Write(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Write(p)
	if n > 0 && !t.vp.Failed() && !t.vs.Failed() {
		t.vp.Feed(p[:n])
		if t.vp.Failed() || t.vs.Failed() {
			t.w.StopPointer("unparseable")
		}
	}
	return n, err
}

// ErrCapped ends a relay whose recording reached its size cap: nothing
// past the cap reaches the viewer unrecorded. The viewer may connect
// again, to a recording of its own.
var ErrCapped = errors.New("the recording reached its size cap; connect again to go on, in a new recording")

func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Read(p)
	if n > 0 && !t.p.Failed() {
		t.p.Feed(p[:n])
		if t.p.Failed() {
			t.w.Stop("unparseable")
		}
	}
	if t.w.Capped() {
		// This read's bytes went past the cap: held back, and the relay
		// ends.
		return 0, ErrCapped
	}
	return n, err
}

// Close closes the connection and ends the recording.
func (t *Tap) Close() error {
	err := t.ReadWriteCloser.Close()
	t.once.Do(func() {
		m, cerr := t.w.Close()
		if t.OnClose != nil {
			t.OnClose(m, cerr)
		}
	})
	return err
}
