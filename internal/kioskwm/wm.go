// Package kioskwm is a kiosk's window manager: the smallest X11 window
// manager that keeps one window on the screen. Chromium's --kiosk opens no
// address bar, but Ctrl+N and Ctrl+T still open a normal browser window
// (with one), and no policy turns that off; with no window manager on the
// session's X server nothing else would stop it. As the window manager, it
// sees every top-level window's map request: the first (the kiosk's) it
// maps at 0,0 filling the screen; every later one it never maps and asks
// to close (WM_DELETE_WINDOW), so the kiosk stays the only window and
// closing it still closes the browser.
//
// Run starts the browser as its child once it holds the window manager's
// place, so no window can be mapped before it does, and returns when the
// browser exits. It speaks the X11 wire protocol itself over the display's
// UNIX socket (the seal's own /tmp/.X11-unix); it needs no X library.
package kioskwm

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// X11 protocol numbers used here (X Window System Protocol, version 11).
const (
	opChangeWindowAttributes = 2
	opMapWindow              = 8
	opConfigureWindow        = 12
	opInternAtom             = 16
	opSendEvent              = 25

	evMapRequest       = 20
	evConfigureRequest = 23
	evDestroyNotify    = 17
	evClientMessage    = 33

	cwEventMask               = 1 << 11
	maskSubstructureNotify    = 1 << 19
	maskSubstructureRedirect  = 1 << 20
	configX, configY          = 1, 2
	configWidth, configHeight = 4, 8
	errBadAccess              = 10
)

// conn is one X11 connection, little-endian.
type conn struct {
	c             net.Conn
	r             *bufio.Reader
	mu            sync.Mutex // writes
	root          uint32
	width, height uint16
	// mapped and gone, when set, are told of the kiosk window being
	// mapped and destroyed (Run).
	mapped, gone func()
}

// dial connects to display (":N") and reads the first screen's root
// window and size.
func dial(display string) (*conn, error) {
	n, ok := strings.CutPrefix(display, ":")
	if i := strings.IndexByte(n, '.'); i >= 0 {
		n = n[:i]
	}
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return nil, fmt.Errorf("display %q: want :N", display)
	}
	c, err := net.Dial("unix", "/tmp/.X11-unix/X"+n)
	if err != nil {
		return nil, fmt.Errorf("connect to X display %s: %w", display, err)
	}
	x := &conn{c: c, r: bufio.NewReader(c)}
	// Byte order 'l', protocol 11.0, no authorisation (the seal's X
	// server is reachable only from inside the seal).
	if _, err := c.Write([]byte{'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		c.Close()
		return nil, err
	}
	head := make([]byte, 8)
	if _, err := io.ReadFull(x.r, head); err != nil {
		c.Close()
		return nil, fmt.Errorf("read the X server's setup reply: %w", err)
	}
	data := make([]byte, int(binary.LittleEndian.Uint16(head[6:]))*4)
	if _, err := io.ReadFull(x.r, data); err != nil {
		c.Close()
		return nil, fmt.Errorf("read the X server's setup reply: %w", err)
	}
	if head[0] != 1 {
		c.Close()
		return nil, fmt.Errorf("the X server refused the connection: %q", strings.TrimRight(string(data), "\x00"))
	}
	if x.root, x.width, x.height, err = parseSetup(data); err != nil {
		c.Close()
		return nil, err
	}
	return x, nil
}

// parseSetup reads the first screen's root window and size from the data
// of a successful connection setup reply (after its 8-byte header).
func parseSetup(data []byte) (root uint32, width, height uint16, err error) {
	if len(data) < 32 {
		return 0, 0, 0, errors.New("setup reply from the X server too short")
	}
	vendor := int(binary.LittleEndian.Uint16(data[16:]))
	formats := int(data[21])
	if data[20] == 0 {
		return 0, 0, 0, errors.New("the X server has no screen")
	}
	off := 32 + (vendor+3)/4*4 + 8*formats
	if len(data) < off+24 {
		return 0, 0, 0, errors.New("setup reply from the X server too short for a screen")
	}
	return binary.LittleEndian.Uint32(data[off:]), binary.LittleEndian.Uint16(data[off+20:]), binary.LittleEndian.Uint16(data[off+22:]), nil
}

// request writes one request: opcode, the data byte, then body (a
// multiple of 4 bytes).
func (x *conn) request(op, data byte, body []byte) error {
	b := make([]byte, 4, 4+len(body))
	b[0], b[1] = op, data
	binary.LittleEndian.PutUint16(b[2:], uint16((4+len(body))/4))
	b = append(b, body...)
	x.mu.Lock()
	defer x.mu.Unlock()
	_, err := x.c.Write(b)
	return err
}

func u32s(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

// readPacket reads one 32-byte event, error or reply (with its extra
// data, discarded except for replies, which are returned whole).
func (x *conn) readPacket() ([]byte, error) {
	p := make([]byte, 32)
	if _, err := io.ReadFull(x.r, p); err != nil {
		return nil, err
	}
	if p[0] == 1 { // a reply: 32 bytes and length*4 more
		extra := make([]byte, int(binary.LittleEndian.Uint32(p[4:]))*4)
		if _, err := io.ReadFull(x.r, extra); err != nil {
			return nil, err
		}
		p = append(p, extra...)
	}
	return p, nil
}

// internAtom asks for an atom's number; called before the event loop, so
// the next reply read is its answer (events before it are skipped: none
// matter before we are the window manager).
func (x *conn) internAtom(name string) (uint32, error) {
	body := make([]byte, 4, 4+len(name)+3)
	binary.LittleEndian.PutUint16(body, uint16(len(name)))
	body = append(body, name...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	if err := x.request(opInternAtom, 0, body); err != nil {
		return 0, err
	}
	for {
		p, err := x.readPacket()
		if err != nil {
			return 0, err
		}
		switch p[0] {
		case 0:
			return 0, fmt.Errorf("InternAtom %s: X error %d", name, p[1])
		case 1:
			return binary.LittleEndian.Uint32(p[8:]), nil
		}
	}
}

// closeGrace is how long a browser whose kiosk window is gone may take to
// exit, or to map a window again (a restored session), before Run ends
// it: a window it was asked to close and kept (unmapped, so unseen) would
// keep it, and the session, running with nothing on the screen.
const closeGrace = 5 * time.Second

// Run becomes the window manager of display, then starts argv (the
// browser) with env and waits for it. The browser's exit code is
// returned; a failure to become the window manager is an error before
// anything starts. Closing the kiosk window ends the browser (closeGrace).
func Run(ctx context.Context, display string, argv, env []string, log *slog.Logger) (int, error) {
	if len(argv) == 0 {
		return 1, errors.New("kiosk window manager: no program to start")
	}
	x, err := dial(display)
	if err != nil {
		return 1, err
	}
	defer x.c.Close()
	protocols, err := x.internAtom("WM_PROTOCOLS")
	if err != nil {
		return 1, err
	}
	deleteWindow, err := x.internAtom("WM_DELETE_WINDOW")
	if err != nil {
		return 1, err
	}
	if err := x.request(opChangeWindowAttributes, 0, u32s(x.root, cwEventMask, maskSubstructureRedirect|maskSubstructureNotify)); err != nil {
		return 1, err
	}
	// A round trip: an error to the attribute change (another window
	// manager holds the place) arrives before the reply.
	if _, err := x.internAtom("WM_STATE"); err != nil {
		if strings.Contains(err.Error(), fmt.Sprintf("X error %d", errBadAccess)) {
			return 1, errors.New("another window manager runs on this display")
		}
		return 1, err
	}

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start %s: %w", argv[0], err)
	}
	// A kiosk window mapped, and one gone: the browser is ended when its
	// window stays gone for closeGrace.
	var mapped atomic.Uint64
	x.mapped = func() { mapped.Add(1) }
	x.gone = func() {
		n := mapped.Load()
		time.AfterFunc(closeGrace, func() {
			if mapped.Load() != n {
				return // a window again
			}
			if cmd.Process.Signal(syscall.SIGTERM) == nil {
				log.Warn("kiosk: the browser's window closed and the browser did not exit; ending it", "after", closeGrace)
			}
		})
	}
	loopErr := make(chan error, 1)
	go func() { loopErr <- x.manage(protocols, deleteWindow, log) }()
	werr := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
		if code < 0 {
			code = 128 + 9 // killed by a signal
		}
	} else if werr != nil {
		return 1, werr
	}
	select {
	case err := <-loopErr:
		log.Warn("kiosk window manager stopped before the browser", "error", err)
	default:
	}
	return code, nil
}

// manage is the event loop: the first window to ask to be mapped is the
// kiosk, mapped full screen; later ones are asked to close, never mapped.
func (x *conn) manage(protocols, deleteWindow uint32, log *slog.Logger) error {
	var kiosk uint32
	full := func(w uint32) error {
		return x.request(opConfigureWindow, 0, append(u32s(w, configX|configY|configWidth|configHeight),
			u32s(0, 0, uint32(x.width), uint32(x.height))...))
	}
	for {
		p, err := x.readPacket()
		if err != nil {
			return err
		}
		switch p[0] & 0x7f {
		case evMapRequest:
			w := binary.LittleEndian.Uint32(p[8:])
			switch {
			case kiosk == 0 || w == kiosk:
				if kiosk == 0 {
					log.Info("kiosk: the browser's window mapped", "window", w)
					if x.mapped != nil {
						x.mapped()
					}
				}
				kiosk = w
				if err := full(w); err != nil {
					return err
				}
				if err := x.request(opMapWindow, 0, u32s(w)); err != nil {
					return err
				}
			default:
				log.Warn("kiosk: a second window refused", "window", w)
				ev := make([]byte, 32)
				ev[0], ev[1] = evClientMessage, 32
				binary.LittleEndian.PutUint32(ev[4:], w)
				binary.LittleEndian.PutUint32(ev[8:], protocols)
				binary.LittleEndian.PutUint32(ev[12:], deleteWindow)
				if err := x.request(opSendEvent, 0, append(u32s(w, 0), ev...)); err != nil {
					return err
				}
			}
		case evConfigureRequest:
			w := binary.LittleEndian.Uint32(p[8:])
			if w == kiosk {
				// It stays where it is, the size of the screen.
				if err := full(w); err != nil {
					return err
				}
				continue
			}
			// Another window (unmapped, or a child): as asked, position
			// and size only.
			mask := uint32(binary.LittleEndian.Uint16(p[26:])) & (configX | configY | configWidth | configHeight)
			var vals []uint32
			for _, f := range []struct {
				bit uint32
				v   uint32
			}{
				{configX, uint32(int32(int16(binary.LittleEndian.Uint16(p[16:]))))},
				{configY, uint32(int32(int16(binary.LittleEndian.Uint16(p[18:]))))},
				{configWidth, uint32(binary.LittleEndian.Uint16(p[20:]))},
				{configHeight, uint32(binary.LittleEndian.Uint16(p[22:]))},
			} {
				if mask&f.bit != 0 {
					vals = append(vals, f.v)
				}
			}
			if err := x.request(opConfigureWindow, 0, append(u32s(w, mask), u32s(vals...)...)); err != nil {
				return err
			}
		case evDestroyNotify:
			if binary.LittleEndian.Uint32(p[8:]) == kiosk {
				// The browser may make its window again (a crashed
				// renderer does not, a restored session might); if not,
				// Run ends it.
				kiosk = 0
				log.Info("kiosk: the browser's window is gone")
				if x.gone != nil {
					x.gone()
				}
			}
		}
	}
}
