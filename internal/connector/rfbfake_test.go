package connector

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeRFB is a tiny RFB server for tests: it does the handshake (version
// and security type configurable), sends a ServerInit, and records every
// byte the client sends after ClientInit. Each connection is reported on
// sessions.
type fakeRFB struct {
	addr     string
	version  string // "003.008" unless set
	password string // offer VncAuth with this password; "" offers None
	sessions chan *fakeSession
	tcp      *tcpTarget
}

// fakeSession is one connection to a fakeRFB.
type fakeSession struct {
	shared byte  // ClientInit's shared flag
	hsErr  error // why the handshake failed; both set before the session is reported
	mu     sync.Mutex
	got    []byte
	err    error // why the session ended
	conn   net.Conn
}

func startFakeRFB(t testing.TB, version, password string) *fakeRFB {
	t.Helper()
	f := &fakeRFB{version: cmpOr(version, "003.008"), password: password, sessions: make(chan *fakeSession, 16)}
	f.tcp = startTCPTarget(t, f.serve)
	f.addr = f.tcp.addr
	return f
}

func (f *fakeRFB) serve(c net.Conn) {
	s := &fakeSession{conn: c}
	if err := f.handshake(c, s); err != nil {
		s.hsErr = err
		s.err = err
		f.sessions <- s
		return
	}
	f.sessions <- s
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		s.mu.Lock()
		s.got = append(s.got, buf[:n]...)
		if err != nil {
			s.err = err
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (f *fakeRFB) handshake(c net.Conn, s *fakeSession) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "RFB %s\n", f.version); err != nil {
		return err
	}
	var v [12]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return fmt.Errorf("read version: %w", err)
	}
	sec := byte(1)
	if f.password != "" {
		sec = 2
	}
	v38 := f.version >= "003.008"
	if f.version == "003.003" {
		c.Write([]byte{0, 0, 0, sec})
	} else {
		c.Write([]byte{1, sec})
		var chosen [1]byte
		if _, err := io.ReadFull(c, chosen[:]); err != nil {
			return fmt.Errorf("read security type: %w", err)
		}
		if chosen[0] != sec {
			return fmt.Errorf("client chose security type %d", chosen[0])
		}
	}
	if sec == 2 {
		var challenge, resp [16]byte
		rand.Read(challenge[:])
		c.Write(challenge[:])
		if _, err := io.ReadFull(c, resp[:]); err != nil {
			return fmt.Errorf("read VncAuth response: %w", err)
		}
		// vncAuthResponse itself is checked against vncpasswd and an
		// independent DES in rfbauth_test.go.
		if resp != vncAuthResponse(f.password, challenge) {
			msg := []byte{0, 0, 0, 1}
			if v38 {
				msg = append(binary.BigEndian.AppendUint32(msg, 14), "wrong password"...)
			}
			c.Write(msg)
			return fmt.Errorf("wrong password")
		}
	}
	if v38 || sec == 2 {
		c.Write([]byte{0, 0, 0, 0})
	}
	var ci [1]byte
	if _, err := io.ReadFull(c, ci[:]); err != nil {
		return fmt.Errorf("read ClientInit: %w", err)
	}
	s.shared = ci[0]
	_, err := c.Write(serverInit(8, 8, "fake"))
	return err
}

// serverInit is a ServerInit message: 32 bpp true colour.
func serverInit(w, h uint16, name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, w)
	b = binary.BigEndian.AppendUint16(b, h)
	b = append(b, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	return append(b, name...)
}

// next returns the next session, failing after 5 seconds.
func (f *fakeRFB) next(t testing.TB) *fakeSession {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no connection reached the fake RFB server")
		return nil
	}
}

// waitGot waits until the session has received at least n bytes and
// returns them all.
func (s *fakeSession) waitGot(t testing.TB, n int) []byte {
	t.Helper()
	var got []byte
	err := waitFor(5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		got = bytes.Clone(s.got)
		if len(got) >= n {
			return nil
		}
		return fmt.Errorf("fake RFB server got %d bytes %x, want %d", len(got), got, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// waitEnd waits for the session's connection to end and returns why.
func (s *fakeSession) waitEnd(t testing.TB) error {
	t.Helper()
	var end error
	err := waitFor(5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err == nil {
			return fmt.Errorf("fake RFB session still open")
		}
		end = s.err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return end
}

// rfbClientLogin is the client side of an RFB handshake, written apart
// from the connector's code: it expects "RFB 003.008", security type None,
// sends ClientInit with the shared flag given, and returns the
// ServerInit's framebuffer size and desktop name.
func rfbClientLogin(t testing.TB, c net.Conn, shared byte) (w, h uint16, name string) {
	t.Helper()
	if v := readN(t, c, 12); string(v) != "RFB 003.008\n" {
		t.Fatalf("server version %q, want RFB 003.008", v)
	}
	mustWrite(t, c, []byte("RFB 003.008\n"))
	n := readN(t, c, 1)[0]
	if n == 0 {
		t.Fatalf("server refused: %q", readN(t, c, int(binary.BigEndian.Uint32(readN(t, c, 4)))))
	}
	if types := readN(t, c, int(n)); !bytes.Contains(types, []byte{1}) {
		t.Fatalf("security types %v: want None (1) offered", types)
	}
	mustWrite(t, c, []byte{1})
	if r := readN(t, c, 4); !bytes.Equal(r, []byte{0, 0, 0, 0}) {
		t.Fatalf("SecurityResult %x, want OK", r)
	}
	mustWrite(t, c, []byte{shared})
	si := readN(t, c, 24)
	w = binary.BigEndian.Uint16(si[0:])
	h = binary.BigEndian.Uint16(si[2:])
	name = string(readN(t, c, int(binary.BigEndian.Uint32(si[20:]))))
	return w, h, name
}

// Client messages for tests.
var (
	keyEvent     = []byte{msgKeyEvent, 1, 0, 0, 0, 0, 0xff, 0x0d} // Return down
	pointerEvent = []byte{msgPointerEvent, 1, 0, 10, 0, 20}       // button 1 at 10,20
	cutText      = append([]byte{msgClientCutText, 0, 0, 0, 0, 0, 0, 6}, "secret"...)
	fbUpdateReq  = []byte{msgFramebufferUpdateRequest, 0, 0, 0, 0, 0, 0, 8, 0, 8}
	setEncodings = []byte{msgSetEncodings, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xc6}
	setPixelFmt  = append([]byte{msgSetPixelFormat, 0, 0, 0}, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0)
	qemuKeyEvent = []byte{msgQEMU, qemuExtendedKeyEvent, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e}
	setDesktopSz = append([]byte{msgSetDesktopSize, 0, 4, 0, 3, 0, 1, 0}, make([]byte, 16)...)
	xvpReboot    = []byte{msgXvp, 0, 1, 3}
	contUpdates  = []byte{msgEnableContinuousUpdates, 1, 0, 0, 0, 0, 0, 8, 0, 8}
	clientFence  = []byte{msgClientFence, 0, 0, 0, 0, 0, 0, 1, 2, 0xaa, 0xbb}
	qemuAudioOn  = []byte{msgQEMU, qemuAudio, 0, qemuAudioEnable}
	qemuAudioFmt = []byte{msgQEMU, qemuAudio, 0, qemuAudioSetFormat, 3, 2, 0, 0, 0xac, 0x44}
	extClipCaps  = append([]byte{msgClientCutText, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8}, 0, 0, 0, 1, 0, 0, 0, 0) // length -8
)
