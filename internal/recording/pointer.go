package recording

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A recording's pointer track is NAME.pointer beside NAME.fbs.gz: the
// viewer's RFB PointerEvents, which the server's stream does not carry
// (viewers draw their own cursor). Each is 9 bytes:
//
//	time     uint32, big-endian, ms since the recording began (as FBS)
//	x, y     uint16, big-endian
//	buttons  uint8, the RFB button mask
//
// Moves closer together than pointerEvery are kept only when the buttons
// change, so a track costs at most ~450 bytes a second. Keystrokes are
// never recorded: the scanner reads KeyEvents only to skip them.
const (
	pointerRecord = 9
	pointerEvery  = 20 // ms
)

// PointerEvent is one record of a pointer track.
type PointerEvent struct {
	MS      uint32 `json:"ms"`
	X       uint16 `json:"x"`
	Y       uint16 `json:"y"`
	Buttons uint8  `json:"buttons"`
}

// maxPointerEvents bounds what ReadPointer returns (a day at 50 a second).
const maxPointerEvents = 50 * 86400

// ReadPointer reads a pointer track. A last record cut short (a crash
// mid-write) is left out.
func ReadPointer(r io.Reader) ([]PointerEvent, error) {
	var out []PointerEvent
	err := EachPointer(r, func(e PointerEvent) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// MaxPointerBytes is the largest pointer track EachPointer reads whole.
const MaxPointerBytes = maxPointerEvents*pointerRecord + pointerRecord - 1

// EachPointer calls fn with each record of a pointer track in turn,
// holding one record at a time (a track may hold millions), until the
// end, fn's error, or the cap on events. A last record cut short (a crash
// mid-write) is left out.
func EachPointer(r io.Reader, fn func(PointerEvent) error) error {
	br := bufio.NewReader(r)
	var rec [pointerRecord]byte
	for n := 0; ; n++ {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("pointer track: %w", err)
		}
		if n == maxPointerEvents {
			return errors.New("pointer track: too many events")
		}
		if err := fn(PointerEvent{
			MS: binary.BigEndian.Uint32(rec[0:]), X: binary.BigEndian.Uint16(rec[4:]),
			Y: binary.BigEndian.Uint16(rec[6:]), Buttons: rec[8],
		}); err != nil {
			return err
		}
	}
}

// ClientScanner reads the viewer's side of an RFB connection (the bytes
// the viewer sends, after WebSocket framing is taken off), in pieces of
// any size, and hands each PointerEvent to Pointer. It knows every client
// message a viewer of the vnc connector may send (the connector refuses
// others); at one it does not know it stops for good (Failed) rather than
// guess where the next message starts. It keeps at most one message
// header, never a message's data.
type ClientScanner struct {
	Pointer func(x, y uint16, buttons byte)

	phase  int // 0: ProtocolVersion, 1: security and ClientInit, 2: messages
	hdr    [20]byte
	have   int   // bytes of hdr collected
	skip   int64 // bytes of the current message's data still to pass
	failed bool
	pre    int // bytes after the version before the messages start
}

// Failed reports whether the scanner met a message it could not frame.
func (c *ClientScanner) Failed() bool { return c.failed }

// Feed scans p.
func (c *ClientScanner) Feed(p []byte) {
	for len(p) > 0 && !c.failed {
		if c.skip > 0 {
			n := int(min(int64(len(p)), c.skip))
			c.skip -= int64(n)
			p = p[n:]
			continue
		}
		want := c.want()
		n := min(len(p), want-c.have)
		copy(c.hdr[c.have:], p[:n])
		c.have += n
		p = p[n:]
		if c.have < want || c.want() > want {
			continue // more to come, or the type byte said how much
		}
		c.step()
	}
}

// want is how many header bytes the current item needs, as far as known.
func (c *ClientScanner) want() int {
	switch c.phase {
	case 0:
		return 12
	case 1:
		return c.pre
	}
	if c.have == 0 {
		return 1
	}
	switch c.hdr[0] {
	case 0: // SetPixelFormat
		return 20
	case 2: // SetEncodings: padding, count(2)
		return 4
	case 6, 251: // ClientCutText, SetDesktopSize: lengths ahead
		return 8
	case 3, 150: // FramebufferUpdateRequest, EnableContinuousUpdates
		return 10
	case 4: // KeyEvent
		return 8
	case 5: // PointerEvent
		return 6
	case 248: // ClientFence: 3 padding, flags(4), length(1)
		return 9
	case 250: // xvp
		return 4
	case 255: // QEMU: subtype first
		return 2
	}
	return 1
}

// step acts on a complete header.
func (c *ClientScanner) step() {
	h := c.hdr[:c.have]
	c.have = 0
	switch c.phase {
	case 0:
		// 3.3 has no security choice from the client; later versions
		// send the type chosen (None, the connector's only offer). Then
		// ClientInit's shared flag.
		c.pre = 2
		if string(h) == "RFB 003.003\n" {
			c.pre = 1
		}
		c.phase = 1
		return
	case 1:
		c.phase = 2
		return
	}
	switch h[0] {
	case 0, 3, 150, 4, 250:
		// Fixed size: the header was the whole message.
	case 5:
		if c.Pointer != nil {
			c.Pointer(binary.BigEndian.Uint16(h[2:]), binary.BigEndian.Uint16(h[4:]), h[1])
		}
	case 2:
		c.skip = 4 * int64(binary.BigEndian.Uint16(h[2:]))
	case 6:
		// ClientCutText: 3 padding, length(4, negative for the extended
		// clipboard: its size is the absolute value).
		l := int32(binary.BigEndian.Uint32(h[4:]))
		c.skip = int64(l)
		if l < 0 {
			c.skip = -int64(l)
		}
	case 251:
		// SetDesktopSize: padding, w(2), h(2), screens(1), padding(1),
		// then 16 bytes a screen.
		c.skip = 16 * int64(h[6])
	case 248:
		c.skip = int64(h[8])
	case 255:
		switch h[1] {
		case 0: // QEMU extended key event: 12 bytes in all
			c.skip = 10
		default: // QEMU audio and the rest: not offered to viewers
			c.failed = true
		}
	default:
		c.failed = true
	}
}
