// Package relay owns airlock's one byte relay: [Pipe] copies bytes both
// ways between two connections, propagates half-close, enforces an idle
// timeout and counts bytes. Every path that joins two streams (connectors,
// the egress relay, the tunnel) uses it, so half-close, splice and shutdown
// are right in one place.
//
// It moves bytes only: it must not parse, log, authenticate or buffer
// beyond one read, and it imports nothing from airlock. Callers decide
// what to connect and what to record from the returned [Stats].
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Stats counts bytes each way: AToB were read from a and written to b.
type Stats struct{ AToB, BToA int64 }

// ErrIdle is wrapped by the error [Pipe] returns when no byte moved for
// its idle duration.
var ErrIdle = errors.New("idle timeout")

// bufSize is the copy buffer of the idle-tracking path, the same size
// io.Copy uses, big enough that per-read overhead is small next to the
// bytes moved.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// Pipe copies a→b and b→a until both directions are done, then closes a
// and b and returns. Pipe owns a and b from the call on: it always closes
// both, and the caller must not read from or write to them concurrently.
//
// When one side reaches EOF, Pipe half-closes the other with CloseWrite
// (*net.TCPConn, *net.UnixConn, *tls.Conn and anything else with that
// method) and keeps copying the other way, so protocols that rely on
// half-close work. A conn without CloseWrite, or whose CloseWrite fails,
// is closed fully instead: its peer could otherwise never learn that the
// other side is done, and the relay would hang until idle or ctx.
// A read or write error in one direction closes both conns, since the
// stream is broken.
//
// Cancelling ctx closes both conns, which unblocks the copies; Pipe then
// returns an error wrapping context.Cause(ctx). If idle > 0 and no byte
// moved either way for idle, Pipe closes both and returns an error
// wrapping [ErrIdle]. A write that blocks on a slow reader counts as
// activity only when it completes.
//
// Ends that are not faults — EOF, a conn closed by either side
// (net.ErrClosed), a peer's reset (ECONNRESET) or a write to a peer that
// has gone (EPIPE) — return a nil error. Other errors are returned,
// joined if both directions failed, as "relay a to b: cause".
//
// With idle == 0 each direction is a plain io.Copy on the conns as given,
// so *net.TCPConn and *net.UnixConn pairs are moved with splice(2) inside
// the kernel. With idle > 0 each direction reads into a pooled 32 KiB
// buffer and stamps an atomic last-activity time that one timer checks,
// because setting a deadline before every read costs a timer update per
// read; the price is losing splice.
func Pipe(ctx context.Context, a, b net.Conn, idle time.Duration) (Stats, error) {
	p := &pipe{a: a, b: b, idle: idle, start: time.Now(), done: make(chan struct{}, 2)}
	go p.aToB()
	go p.bToA()

	ctxDone := ctx.Done()
	var idleC <-chan time.Time
	var idleT *time.Timer
	if idle > 0 {
		idleT = time.NewTimer(idle)
		defer idleT.Stop()
		idleC = idleT.C
	}

	var stopped error // why Pipe closed the conns itself, if it did
	for pending := 2; pending > 0; {
		select {
		case <-p.done:
			pending--
		case <-ctxDone:
			ctxDone = nil
			if stopped == nil {
				stopped = fmt.Errorf("relay stopped: %w", context.Cause(ctx))
				p.closeBoth()
			}
		case <-idleC:
			quiet := time.Since(p.start) - time.Duration(p.last.Load())
			if quiet < idle {
				idleT.Reset(idle - quiet)
				break
			}
			idleC = nil
			if stopped == nil {
				stopped = fmt.Errorf("relay: no bytes moved for %v: %w", idle, ErrIdle)
				p.closeBoth()
			}
		}
	}
	p.closeBoth()

	st := Stats{AToB: p.ab.n, BToA: p.ba.n}
	if stopped != nil {
		return st, stopped
	}
	var errs []error
	if p.ab.err != nil {
		errs = append(errs, fmt.Errorf("relay a to b: %w", p.ab.err))
	}
	if p.ba.err != nil {
		errs = append(errs, fmt.Errorf("relay b to a: %w", p.ba.err))
	}
	return st, errors.Join(errs...)
}

// pipe is the state of one Pipe call.
type pipe struct {
	a, b  net.Conn
	idle  time.Duration
	start time.Time
	// last is the time of the last byte moved, as nanoseconds since start,
	// so the check uses the monotonic clock and an atomic int64.
	last atomic.Int64
	// done gets one value per finished direction; receiving it makes that
	// direction's result visible.
	done   chan struct{}
	ab, ba result
}

type result struct {
	n   int64
	err error // nil for EOF and other ordinary ends
}

// aToB and bToA are the two copy goroutines, named so a stack dump shows
// which direction is blocked.
func (p *pipe) aToB() {
	p.ab = p.forward(p.b, p.a)
	p.done <- struct{}{}
}

func (p *pipe) bToA() {
	p.ba = p.forward(p.a, p.b)
	p.done <- struct{}{}
}

// forward copies src to dst, then propagates the end: half-close on EOF,
// full close of both on anything else.
func (p *pipe) forward(dst, src net.Conn) result {
	var n int64
	var err error
	if p.idle > 0 {
		n, err = p.copyTracked(dst, src)
	} else {
		// dst and src as given, not wrapped, so io.Copy finds
		// *net.TCPConn's ReadFrom/WriteTo and the kernel splices.
		n, err = io.Copy(dst, src)
	}
	if err == nil {
		closeWrite(dst)
		return result{n: n}
	}
	p.closeBoth()
	if ordinaryEnd(err) {
		err = nil
	}
	return result{n: n, err: err}
}

// copyTracked is io.Copy with a pooled buffer that stamps p.last whenever
// bytes move. It returns a nil error at EOF.
func (p *pipe) copyTracked(dst, src net.Conn) (int64, error) {
	buf := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(buf)
	var n int64
	for {
		nr, rerr := src.Read(buf[:])
		if nr > 0 {
			p.touch()
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if nw > 0 {
				p.touch()
			}
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func (p *pipe) touch() { p.last.Store(int64(time.Since(p.start))) }

// closeBoth closes a and b; it is called from several goroutines and more
// than once, and the later calls' net.ErrClosed is expected.
func (p *pipe) closeBoth() {
	p.a.Close()
	p.b.Close()
}

// closeWrite half-closes c, or closes it if it cannot (see Pipe).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		return
	}
	c.Close()
}

// ordinaryEnd reports whether err is how a stream normally ends rather
// than a fault worth returning: EOF, a conn we or the caller closed, or a
// peer that closed or reset its end while we were reading or writing.
func ordinaryEnd(err error) bool {
	return errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}
