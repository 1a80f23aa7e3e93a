// Package rdpclient is the user's side of native RDP (`airlock rdp`): a
// listener on a random loopback port whose every connection is tunnelled
// over mutual TLS to the gateway's RDP port, and the launch of the local
// RDP client pointed at it. It runs on Linux, macOS and Windows, and
// imports no gateway or seal code: only the .airlock file format.
package rdpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/airlock-hpc/airlock/internal/rdpfile"
)

// Tunnel carries local connections to one session through the gateway.
type Tunnel struct {
	File *rdpfile.File
	Log  *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now  func() time.Time
	conf *tls.Config
}

// New checks the file and prepares the TLS side.
func New(f *rdpfile.File, log *slog.Logger) (*Tunnel, error) {
	conf, err := f.TLSConfig()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tunnel{File: f, Log: log, Now: time.Now, conf: conf}, nil
}

// UserError is a failure told to the user as one plain sentence.
type UserError struct {
	Sentence string
	Err      error
}

func (e *UserError) Error() string { return e.Sentence }
func (e *UserError) Unwrap() error { return e.Err }

func sentence(err error, s string, a ...any) error {
	return &UserError{Sentence: fmt.Sprintf(s, a...), Err: err}
}

// Dial opens one tunnel connection: TCP to the gateway, TLS with the pin
// checked before the certificate is sent, then the gateway's status line.
// Its errors are UserErrors.
func (t *Tunnel) Dial(ctx context.Context) (net.Conn, error) {
	if !t.File.Expires.IsZero() && !t.Now().Before(t.File.Expires) {
		return nil, sentence(nil, "This .airlock file expired at %s; download a new one from the session page.", t.File.Expires.Local().Format(time.DateTime))
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", t.File.Gateway)
	if err != nil {
		return nil, sentence(err, "Cannot reach the gateway at %s: check your network (%v).", t.File.Gateway, unwrapNet(err))
	}
	gather := &gatherConn{Conn: raw}
	conn := tls.Client(gather, t.conf)
	if err := conn.HandshakeContext(dctx); err != nil {
		raw.Close()
		if errors.Is(err, rdpfile.ErrPin) {
			return nil, sentence(err, "The gateway at %s is not the one this file was made for (its certificate does not match); nothing was sent. Download a new file, or ask your admins.", t.File.Gateway)
		}
		return nil, sentence(err, "The secure connection to the gateway at %s failed (%v).", t.File.Gateway, err)
	}
	// In TLS 1.3 the gateway judges the client certificate after the
	// client's handshake is over: its verdict is the status line.
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReaderSize(conn, 256)
	line, err := br.ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	switch {
	case line == rdpfile.StatusOK:
	case strings.HasPrefix(line, rdpfile.StatusRefused):
		conn.Close()
		return nil, sentence(nil, "%s", strings.TrimSpace(strings.TrimPrefix(line, rdpfile.StatusRefused)))
	case err != nil:
		conn.Close()
		return nil, sentence(err, "The gateway refused this file's certificate: it has expired, was revoked, or is not for this gateway. Download a new one from the session page.")
	default:
		conn.Close()
		return nil, sentence(nil, "The gateway at %s answered something unexpected; is it an airlock gateway's RDP port?", t.File.Gateway)
	}
	return &bufConn{Conn: conn, r: br, gather: gather}, nil
}

func unwrapNet(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// bufConn reads what the status line's reader already buffered first,
// and sends the TLS records of each large Write in one write(2).
type bufConn struct {
	net.Conn
	r      *bufio.Reader
	gather *gatherConn
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufConn) Write(p []byte) (int, error) {
	// Up to a kilobyte is one record anyway.
	if len(p) <= 1<<10 {
		return c.Conn.Write(p)
	}
	c.gather.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.gather.flush(); err == nil && ferr != nil {
		// crypto/tls took the bytes, but they never left.
		return 0, ferr
	}
	return n, err
}

// CloseWrite passes a half-close on to TLS.
func (c *bufConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Serve accepts on ln until ctx ends, tunnelling each connection the
// user opened (on Linux, a connection of another local user's is closed
// unanswered). A connection that cannot be tunnelled is closed, and its
// error sent on errs (without blocking) for the caller to tell the user.
func (t *Tunnel) Serve(ctx context.Context, ln net.Listener, errs chan<- error) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if me, err := peerIsMe(c); !me {
				// Not for the user to hear about: someone else's attempt.
				t.Log.Warn("refused a connection another local user opened", "remote_addr", c.RemoteAddr().String(), "error", err)
				return
			}
			up, err := t.Dial(ctx)
			if err != nil {
				t.Log.Warn("tunnel refused", "error", err)
				select {
				case errs <- err:
				default:
				}
				return
			}
			defer up.Close()
			pipe(ctx, c, up)
		}()
	}
}

// pipe copies both ways until either side ends or ctx does.
func pipe(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		copyBig(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// upBuf is the tunnel's copy buffer: a read from the RDP client of up to
// eight TLS records, which bufConn sends in one write(2). io.Copy's 32 KiB
// made two records and two writes of every read (BenchmarkRDPPath).
const upBuf = 128 << 10

// copyBig copies src to dst through one upBuf buffer, until EOF or an
// error. Not io.Copy: *net.TCPConn's WriteTo would pick its own 32 KiB.
func copyBig(dst io.Writer, src io.Reader) {
	buf := make([]byte, upBuf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
