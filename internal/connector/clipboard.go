package connector

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
)

// The clipboard filter enforces Config.Clipboard on a vnc connection. RFB
// messages carry no length, so dropping ServerCutText means parsing the
// whole server stream, framebuffer updates included. To keep that parser
// small and exact the connector takes the stream over: it terminates the
// security handshake (as in view mode), fixes the pixel format at 32 bits
// per pixel (it sends SetPixelFormat itself and shows the client a
// ServerInit with that format; a client SetPixelFormat of another size is
// refused), and removes from the client's SetEncodings every encoding the
// server filter cannot measure. Tight, Hextile and JPEG go; Raw, CopyRect,
// RRE, Zlib and ZRLE (which noVNC and TigerVNC both speak) stay. Whatever
// the server then sends that the filter does not know closes the
// connection: a workload that switches its VNC server's clipboard on again
// (TigerVNC's vncconfig can) or sends hand-made bytes still reaches
// nothing but the filter.
//
// Both the classic cut-text messages and those of the Extended Clipboard
// extension (a negative length) are dropped in a refused direction; the
// extension's pseudo-encoding is removed from SetEncodings too, so a
// server never offers it. Each drop is counted for the connection's log
// line, and the first in each direction is logged when it happens.

// errClipboardRefused is wrapped by the clipboard filter's errors when it
// closes a connection rather than guess.
var errClipboardRefused = errors.New("refused by the clipboard filter")

// Encodings (RFC 6143 §7.7 and rfbproto) the server filter can measure.
const (
	encRaw                 = 0
	encCopyRect            = 1
	encRRE                 = 2
	encZlib                = 6
	encZRLE                = 16
	encDesktopSize         = -223
	encLastRect            = -224
	encCursor              = -239
	encQEMUExtendedKey     = -258
	encDesktopName         = -307
	encExtendedDesktopSize = -308
	encXvp                 = -309
	encFence               = -312
	encContinuousUpdates   = -313
	// The quality and compression level pseudo-encodings only tell the
	// server what to do; no rectangle ever carries them.
	encQualityFirst  = -32
	encQualityLast   = -23
	encCompressFirst = -256
	encCompressLast  = -247
)

// keptEncoding reports whether the server filter can measure rectangles of
// encoding e, so a client may ask for it under a clipboard policy.
func keptEncoding(e int32) bool {
	switch e {
	case encRaw, encCopyRect, encRRE, encZlib, encZRLE,
		encDesktopSize, encLastRect, encCursor, encQEMUExtendedKey,
		encDesktopName, encExtendedDesktopSize, encXvp, encFence, encContinuousUpdates:
		return true
	}
	return (e >= encQualityFirst && e <= encQualityLast) || (e >= encCompressFirst && e <= encCompressLast)
}

// filterBPP is the only pixel size under a clipboard policy; fixedPixelFormat
// is the format the connector asks the server for: 32 bits per pixel, depth
// 24, little-endian true colour, red in bits 16-23 (what noVNC asks for, up
// to the shifts, which do not change any length).
const filterBPP = 4

var fixedPixelFormat = [16]byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0}

// maxDesktopName bounds the name in a ServerInit or DesktopName
// rectangle: the workload chooses it.
const maxDesktopName = 1 << 16

// clipStats counts what a clipboard filter did, for the connection's log
// line and the audit.
type clipStats struct {
	inDropped, outDropped atomic.Int64
	// onDrop, if set, is called on the first drop in each direction.
	onDrop func(dir string, n int64)
}

func (s *clipStats) dropped(dir string, n int64) {
	c := &s.inDropped
	if dir == "out" {
		c = &s.outDropped
	}
	if c.Add(1) == 1 && s.onDrop != nil {
		s.onDrop(dir, n)
	}
}

// clientPolicy makes a viewFilter the client half of a control connection
// under a clipboard policy: everything the client may send passes, but
// ClientCutText only when cutText, SetEncodings loses what the server
// filter cannot measure, and SetPixelFormat must keep filterBPP.
type clientPolicy struct {
	// input forwards keys, pointer, xvp and desktop size (control mode);
	// without it they are dropped as the view filter drops them.
	input   bool
	cutText bool
	stats   *clipStats
}

// newClientFilter returns the client half of a connection under a
// clipboard policy.
func newClientFilter(src io.Reader, p *clientPolicy) *viewFilter {
	f := newViewFilter(src)
	f.control = p
	return f
}

// parseControl is parse for a control connection under a clipboard
// policy; t, the type byte, is buf[start].
func (f *viewFilter) parseControl(start int, t byte) error {
	switch t {
	case msgSetPixelFormat:
		if err := f.fill(19); err != nil { // padding(3) pixel-format(16)
			return err
		}
		if bpp := f.buf[start+4]; bpp != 8*filterBPP {
			return fmt.Errorf("rfb clipboard filter: SetPixelFormat with %d bits per pixel, only %d allowed: %w", bpp, 8*filterBPP, errClipboardRefused)
		}
		return nil
	case msgSetEncodings:
		if err := f.fill(3); err != nil { // padding(1) number-of-encodings(2)
			return err
		}
		n := int(binary.BigEndian.Uint16(f.buf[start+2:]))
		if err := f.fill(4 * n); err != nil {
			return err
		}
		// Keep only what the server filter can measure, in the client's
		// order of preference.
		list := f.buf[start+4:]
		kept := 0
		for i := range n {
			e := list[4*i : 4*i+4]
			if keptEncoding(int32(binary.BigEndian.Uint32(e))) {
				copy(list[4*kept:], e)
				kept++
			}
		}
		binary.BigEndian.PutUint16(f.buf[start+2:], uint16(kept))
		f.buf = f.buf[:start+4+4*kept]
		return nil
	case msgFramebufferUpdateRequest, msgEnableContinuousUpdates:
		return f.fill(9)
	case msgClientFence:
		if err := f.fill(8); err != nil {
			return err
		}
		n := int(f.buf[start+8])
		if n > maxFenceData {
			return fmt.Errorf("rfb clipboard filter: ClientFence with %d bytes of data, limit %d: %w", n, maxFenceData, errClipboardRefused)
		}
		return f.fill(n)
	case msgKeyEvent:
		return f.input(start, 7)
	case msgPointerEvent:
		return f.input(start, 5)
	case msgXvp:
		return f.input(start, 3)
	case msgClientCutText:
		if err := f.fill(7); err != nil {
			return err
		}
		n := int64(int32(binary.BigEndian.Uint32(f.buf[start+4:])))
		if n < 0 {
			n = -n // Extended Clipboard
		}
		if n > maxCutText {
			return fmt.Errorf("rfb clipboard filter: ClientCutText of %d bytes, limit %d: %w", n, maxCutText, errClipboardRefused)
		}
		if f.control.cutText {
			return f.fill(int(n))
		}
		f.control.stats.dropped("in", n)
		return f.drop(start, n)
	case msgSetDesktopSize:
		if err := f.fill(7); err != nil {
			return err
		}
		return f.input(start, 16*int(f.buf[start+6]))
	case msgQEMU:
		if err := f.fill(1); err != nil {
			return err
		}
		if sub := f.buf[start+1]; sub == qemuExtendedKeyEvent {
			return f.input(start, 10)
		}
		// QEMU audio is not among the kept encodings, so no client that
		// asked for it through us can be using it.
		return fmt.Errorf("rfb clipboard filter: QEMU client message %d: not allowed: %w", f.buf[start+1], errClipboardRefused)
	}
	return fmt.Errorf("rfb clipboard filter: client message type %d: unknown: %w", t, errClipboardRefused)
}

// input reads the n remaining bytes of an input message that started at
// buf[start]: kept in control mode, dropped in view mode.
func (f *viewFilter) input(start, n int) error {
	if f.control.input {
		return f.fill(n)
	}
	return f.drop(start, int64(n))
}

// Server-to-client RFB message types.
const (
	smsgFramebufferUpdate      = 0
	smsgSetColourMapEntries    = 1
	smsgBell                   = 2
	smsgServerCutText          = 3
	smsgEndOfContinuousUpdates = 150
	smsgServerFence            = 248
	smsgXvp                    = 250
)

// serverFilter is the server half of a connection under a clipboard
// policy. It reads the server's messages after ServerInit and yields them
// byte for byte, except ServerCutText when cutText is false. Rectangle
// data is never buffered: the filter parses headers and then passes the
// counted bytes straight into the caller's buffer.
type serverFilter struct {
	src     *bufio.Reader
	cutText bool
	stats   *clipStats

	hdr   [64]byte // room for the longest header the filter builds
	out   []byte   // unread header bytes (a slice of hdr)
	pass  int64    // bytes after out to pass unchanged
	rects int      // rectangles left in the current FramebufferUpdate
	err   error    // sticky, returned once out and pass are done
}

// serverBufSize is the filter's read buffer; rectangle data bypasses it
// when the caller's buffer is larger.
const serverBufSize = 16 << 10

func newServerFilter(src io.Reader, cutText bool, stats *clipStats) *serverFilter {
	return &serverFilter{src: bufio.NewReaderSize(src, serverBufSize), cutText: cutText, stats: stats}
}

// Read implements io.Reader. It returns io.EOF when src ends between
// messages and io.ErrUnexpectedEOF inside one.
func (f *serverFilter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(f.out) == 0 && f.pass == 0 {
		if f.err != nil {
			return 0, f.err
		}
		if f.err = f.next(); f.err != nil {
			// Nothing of a message the filter refused or could not
			// finish reading goes out.
			f.out, f.pass = nil, 0
		}
	}
	if len(f.out) > 0 {
		n := copy(p, f.out)
		f.out = f.out[n:]
		return n, nil
	}
	n, err := f.src.Read(p[:min(int64(len(p)), f.pass)])
	f.pass -= int64(n)
	if err != nil {
		f.err = noEOF(err)
		if n == 0 {
			return 0, f.err
		}
	}
	return n, nil
}

// header reads n more bytes of the current header into hdr after the l
// already there, and returns them.
func (f *serverFilter) header(l, n int) ([]byte, error) {
	if _, err := io.ReadFull(f.src, f.hdr[l:l+n]); err != nil {
		return nil, noEOF(err)
	}
	f.out = f.hdr[:l+n]
	return f.hdr[l : l+n], nil
}

// next parses the next message header, or rectangle header inside a
// FramebufferUpdate, setting out and pass.
func (f *serverFilter) next() error {
	if f.rects > 0 {
		return f.rect()
	}
	t, err := f.src.ReadByte()
	if err != nil {
		return err // io.EOF here is a clean end between messages
	}
	f.hdr[0] = t
	f.out = f.hdr[:1]
	switch t {
	case smsgFramebufferUpdate:
		h, err := f.header(1, 3) // padding(1) number-of-rectangles(2)
		if err != nil {
			return err
		}
		f.rects = int(binary.BigEndian.Uint16(h[1:]))
		return nil
	case smsgSetColourMapEntries:
		h, err := f.header(1, 5) // padding(1) first-colour(2) number-of-colours(2)
		if err != nil {
			return err
		}
		f.pass = 6 * int64(binary.BigEndian.Uint16(h[3:]))
		return nil
	case smsgBell, smsgEndOfContinuousUpdates:
		return nil
	case smsgServerCutText:
		h, err := f.header(1, 7) // padding(3) length(4)
		if err != nil {
			return err
		}
		n := int64(int32(binary.BigEndian.Uint32(h[3:])))
		if n < 0 {
			n = -n // Extended Clipboard
		}
		if f.cutText {
			f.pass = n
			return nil
		}
		f.out = nil
		f.stats.dropped("out", n)
		for n > 0 {
			k, err := f.src.Discard(int(min(n, 1<<30)))
			n -= int64(k)
			if err != nil {
				return noEOF(err)
			}
		}
		return nil
	case smsgServerFence:
		h, err := f.header(1, 8) // padding(3) flags(4) length(1)
		if err != nil {
			return err
		}
		if n := h[7]; n > maxFenceData {
			return fmt.Errorf("rfb clipboard filter: ServerFence with %d bytes of data, limit %d: %w", n, maxFenceData, errClipboardRefused)
		} else {
			f.pass = int64(n)
		}
		return nil
	case smsgXvp:
		_, err := f.header(1, 3) // padding(1) version(1) code(1)
		return err
	}
	return fmt.Errorf("rfb clipboard filter: server message type %d: unknown: %w", t, errClipboardRefused)
}

// rect parses one rectangle header of a FramebufferUpdate.
func (f *serverFilter) rect() error {
	h, err := f.header(0, 12) // x y w h (2 each) encoding(4)
	if err != nil {
		return err
	}
	f.rects--
	w, hgt := int64(binary.BigEndian.Uint16(h[4:])), int64(binary.BigEndian.Uint16(h[6:]))
	enc := int32(binary.BigEndian.Uint32(h[8:]))
	switch enc {
	case encRaw:
		f.pass = w * hgt * filterBPP
	case encCopyRect:
		f.pass = 4 // src-x src-y
	case encRRE:
		s, err := f.header(12, 4+filterBPP) // number-of-subrectangles(4) background
		if err != nil {
			return err
		}
		f.pass = int64(binary.BigEndian.Uint32(s)) * (filterBPP + 8)
	case encZlib, encZRLE:
		s, err := f.header(12, 4) // length(4)
		if err != nil {
			return err
		}
		f.pass = int64(binary.BigEndian.Uint32(s))
	case encCursor:
		f.pass = w*hgt*filterBPP + (w+7)/8*hgt
	case encDesktopName:
		s, err := f.header(12, 4)
		if err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint32(s))
		if n > maxDesktopName {
			return fmt.Errorf("rfb clipboard filter: desktop name of %d bytes, limit %d: %w", n, maxDesktopName, errClipboardRefused)
		}
		f.pass = n
	case encExtendedDesktopSize:
		s, err := f.header(12, 4) // number-of-screens(1) padding(3)
		if err != nil {
			return err
		}
		f.pass = 16 * int64(s[0])
	case encLastRect:
		f.rects = 0
	case encDesktopSize, encQEMUExtendedKey, encXvp, encFence, encContinuousUpdates:
		// No data: these rectangles only announce a change or support.
	default:
		return fmt.Errorf("rfb clipboard filter: rectangle encoding %d: not one the client may use: %w", enc, errClipboardRefused)
	}
	return nil
}

// clipServerInit reads the ServerInit of a connection under a clipboard
// policy from server, asks the server for fixedPixelFormat, and returns
// the ServerInit to show the client: the same, with that format.
func clipServerInit(server io.ReadWriter) ([]byte, error) {
	msg := make([]byte, 24) // w(2) h(2) pixel-format(16) name-length(4)
	if _, err := io.ReadFull(server, msg); err != nil {
		return nil, fmt.Errorf("read ServerInit: %w", noEOF(err))
	}
	n := binary.BigEndian.Uint32(msg[20:])
	if n > maxDesktopName {
		return nil, fmt.Errorf("ServerInit: desktop name of %d bytes, limit %d: %w", n, maxDesktopName, errClipboardRefused)
	}
	msg = slices.Grow(msg, int(n))[:24+int(n)]
	if _, err := io.ReadFull(server, msg[24:]); err != nil {
		return nil, fmt.Errorf("read ServerInit: %w", noEOF(err))
	}
	spf := append([]byte{msgSetPixelFormat, 0, 0, 0}, fixedPixelFormat[:]...)
	if _, err := server.Write(spf); err != nil {
		return nil, fmt.Errorf("write SetPixelFormat: %w", err)
	}
	copy(msg[4:20], fixedPixelFormat[:])
	return msg, nil
}

// serverFilteredConn is the server connection read through a
// serverFilter; writes, deadlines and Close go straight to it. Like
// filteredConn it has no CloseWrite or unwrapping method, so nothing can
// read around the filter.
type serverFilteredConn struct {
	net.Conn
	f *serverFilter
}

func (c *serverFilteredConn) Read(p []byte) (int, error) { return c.f.Read(p) }
