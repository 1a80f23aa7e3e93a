package connector

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Client-to-server RFB message types: RFC 6143 §7.5, plus the extensions
// registered in the community RFB specification (rfbproto) that noVNC,
// TigerVNC and QEMU use.
const (
	msgSetPixelFormat           = 0
	msgSetEncodings             = 2
	msgFramebufferUpdateRequest = 3
	msgKeyEvent                 = 4
	msgPointerEvent             = 5
	msgClientCutText            = 6
	msgEnableContinuousUpdates  = 150
	msgClientFence              = 248
	msgXvp                      = 250
	msgSetDesktopSize           = 251
	msgQEMU                     = 255

	// Submessages of msgQEMU.
	qemuExtendedKeyEvent = 0
	qemuAudio            = 1
	// Operations of qemuAudio.
	qemuAudioEnable    = 0
	qemuAudioDisable   = 1
	qemuAudioSetFormat = 2
)

const (
	// maxCutText bounds a ClientCutText the view filter will skip. The
	// filter drops clipboard text anyway; the bound only stops a client
	// from making the connector read without end.
	maxCutText = 1 << 20
	// maxFenceData is the largest ClientFence payload rfbproto allows.
	maxFenceData = 64
)

// errViewRefused is wrapped by the view filter's errors when it closes a
// connection rather than guess: a message type it does not know, or one
// whose declared length is over a limit.
var errViewRefused = errors.New("refused in view mode")

// viewFilter is the client-to-server half of a view-only VNC connection.
// It reads an RFB client message stream that starts after the handshake
// (after ClientInit), and yields only the messages that cannot change the
// desktop:
//
//	forwarded: SetPixelFormat, SetEncodings, FramebufferUpdateRequest,
//	           EnableContinuousUpdates, ClientFence, QEMU audio
//	dropped:   KeyEvent, PointerEvent, ClientCutText, QEMU extended key
//	           event, SetDesktopSize, xvp (power control)
//
// Any other message type fails the stream with an error wrapping
// errViewRefused: RFB messages carry no length, so the filter cannot skip
// what it cannot parse, and passing it on could let input through.
//
// Forwarded messages come out byte for byte as they went in. The filter
// never blocks to fill p once it holds a complete message: a viewer's
// FramebufferUpdateRequest goes out as soon as it has arrived.
type viewFilter struct {
	// control, when set, makes this the client half of a control
	// connection under a clipboard policy instead (clipboard.go): input
	// is forwarded and only what the policy refuses is dropped.
	control *clientPolicy
	src     *bufio.Reader
	buf     []byte // messages parsed and allowed, not yet read
	out     []byte // unread part of buf
	err     error  // sticky; returned once out is drained
	dropped int64  // messages dropped, for the connection's log line
}

// viewBufSize is the filter's read buffer. Viewers send little (update
// requests and the input the filter drops), so a small buffer keeps the
// cost per viewer low; longer messages are read across refills.
const viewBufSize = 1 << 10

// newViewFilter returns a filter reading client messages from src.
func newViewFilter(src io.Reader) *viewFilter {
	return &viewFilter{src: bufio.NewReaderSize(src, viewBufSize)}
}

// Read implements io.Reader. It returns io.EOF when src ends on a message
// boundary and io.ErrUnexpectedEOF when src ends inside a message.
func (f *viewFilter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := f.wait(len(p)); err != nil {
		return 0, err
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// WaitRead blocks until Read has bytes to return or its error to report,
// like Read but holding no buffer of the caller's; it is what makes
// filteredConn a relay.ReadWaiter. It returns that error, if any.
func (f *viewFilter) WaitRead() error {
	return f.wait(viewBufSize)
}

// wait parses messages until some are ready to read, batching at most
// about max bytes of them.
func (f *viewFilter) wait(max int) error {
	for len(f.out) == 0 {
		if f.err != nil {
			return f.err
		}
		if cap(f.buf) > 4*viewBufSize {
			// A long SetEncodings went through; do not keep its room.
			f.buf = nil
		}
		f.buf = f.buf[:0]
		f.err = f.next()
		// Batch what has already arrived, so a burst of small messages
		// becomes one write to the server, but never wait for more.
		for f.err == nil && len(f.buf) < max && f.src.Buffered() > 0 {
			f.err = f.next()
		}
		f.out = f.buf
	}
	return nil
}

// next parses one message from src, appending it to buf if it is
// allowed. On error buf holds only the complete messages before it.
func (f *viewFilter) next() error {
	start := len(f.buf)
	err := f.parse(start)
	if err != nil {
		f.buf = f.buf[:start]
	}
	return err
}

// parse is next without the clean-up.
func (f *viewFilter) parse(start int) error {
	t, err := f.src.ReadByte()
	if err != nil {
		return err // io.EOF here is a clean end between messages
	}
	f.buf = append(f.buf, t)
	if f.control != nil {
		return f.parseControl(start, t)
	}
	switch t {
	case msgSetPixelFormat:
		return f.fill(19) // padding(3) pixel-format(16)
	case msgSetEncodings:
		if err := f.fill(3); err != nil { // padding(1) number-of-encodings(2)
			return err
		}
		n := binary.BigEndian.Uint16(f.buf[start+2:])
		return f.fill(4 * int(n))
	case msgFramebufferUpdateRequest:
		return f.fill(9) // incremental(1) x y w h (2 each)
	case msgEnableContinuousUpdates:
		return f.fill(9) // enable(1) x y w h (2 each)
	case msgClientFence:
		if err := f.fill(8); err != nil { // padding(3) flags(4) length(1)
			return err
		}
		n := int(f.buf[start+8])
		if n > maxFenceData {
			return fmt.Errorf("rfb view filter: ClientFence with %d bytes of data, limit %d: %w", n, maxFenceData, errViewRefused)
		}
		return f.fill(n)
	case msgKeyEvent:
		return f.drop(start, 7) // down(1) padding(2) key(4)
	case msgPointerEvent:
		return f.drop(start, 5) // buttons(1) x(2) y(2)
	case msgXvp:
		return f.drop(start, 3) // padding(1) version(1) code(1)
	case msgClientCutText:
		if err := f.fill(7); err != nil { // padding(3) length(4)
			return err
		}
		// The Extended Clipboard extension sends a negative length whose
		// absolute value is the payload size; noVNC sends one on connect
		// to announce its capabilities, so it must not end the connection.
		n := int64(int32(binary.BigEndian.Uint32(f.buf[start+4:])))
		if n < 0 {
			n = -n
		}
		if n > maxCutText {
			return fmt.Errorf("rfb view filter: ClientCutText of %d bytes, limit %d: %w", n, maxCutText, errViewRefused)
		}
		return f.drop(start, n)
	case msgSetDesktopSize:
		if err := f.fill(7); err != nil { // padding(1) w(2) h(2) screens(1) padding(1)
			return err
		}
		return f.drop(start, 16*int64(f.buf[start+6]))
	case msgQEMU:
		if err := f.fill(1); err != nil { // submessage type(1)
			return err
		}
		switch sub := f.buf[start+1]; sub {
		case qemuExtendedKeyEvent:
			return f.drop(start, 10) // down(2) keysym(4) keycode(4)
		case qemuAudio:
			if err := f.fill(2); err != nil { // operation(2)
				return err
			}
			switch op := binary.BigEndian.Uint16(f.buf[start+2:]); op {
			case qemuAudioEnable, qemuAudioDisable:
				return nil
			case qemuAudioSetFormat:
				return f.fill(6) // format(1) channels(1) frequency(4)
			default:
				return fmt.Errorf("rfb view filter: QEMU audio operation %d: unknown: %w", op, errViewRefused)
			}
		default:
			return fmt.Errorf("rfb view filter: QEMU client message %d: unknown: %w", sub, errViewRefused)
		}
	}
	return fmt.Errorf("rfb view filter: client message type %d: unknown: %w", t, errViewRefused)
}

// fill appends the next n bytes of src to buf.
func (f *viewFilter) fill(n int) error {
	l := len(f.buf)
	f.buf = append(f.buf, make([]byte, n)...)
	if _, err := io.ReadFull(f.src, f.buf[l:]); err != nil {
		return noEOF(err)
	}
	return nil
}

// drop removes the message that started at buf[start] and skips the n
// bytes of it that are still in src.
func (f *viewFilter) drop(start int, n int64) error {
	f.buf = f.buf[:start]
	f.dropped++
	for n > 0 {
		k, err := f.src.Discard(int(min(n, 1<<30)))
		n -= int64(k)
		if err != nil {
			return noEOF(err)
		}
	}
	return nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a message, the end
// of the stream is a truncation.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
