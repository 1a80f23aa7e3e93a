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
	"os"
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

// ReadWaiter is implemented by connections that can wait for their next
// bytes without being handed a buffer to read them into, such as a
// WebSocket waiting for its next message header. [Pipe] uses it to hold no
// copy buffer while a direction is idle.
type ReadWaiter interface {
	// WaitRead blocks until the peer has begun to send what the next Read
	// returns, or until that Read would fail, and consumes nothing of the
	// stream. The Read may still wait for the rest of something the peer
	// is part way through sending, but not for the peer to start. It
	// returns io.EOF, or another error, when the next Read would.
	WaitRead() error
}

const (
	// bigSize is the buffer a direction borrows from bigPool while bytes
	// are moving. Each read becomes one write, and so one WebSocket frame
	// or one batch of TLS records; against 64 KiB, 128 KiB took a third
	// less CPU per byte on the vnc download path (BenchmarkVNCDownload
	// in internal/connector, cpu-ns/op), most of it in the client's
	// per-frame work, and it is held only while bytes move.
	bigSize = 128 << 10
	// smallSize is the buffer a direction whose source can only be waited
	// on by reading (a *tls.Conn, say) keeps while it is idle. Reads that
	// fill it switch the direction to a big buffer.
	smallSize = 2 << 10
	// bulkRead is a read that keeps a direction on its big buffer though
	// it did not fill it: a *tls.Conn returns at most one record, 16 KiB,
	// per Read, so a full record means more is coming. Dropping back to
	// the small buffer after it cut every following record in two (2 KiB
	// and the rest), doubling the writes and, towards a TLS peer, the
	// records (BenchmarkRDPPath in internal/gateway).
	bulkRead = 16 << 10
)

var bigPool = sync.Pool{New: func() any { return new([bigSize]byte) }}

// Pipe copies a→b and b→a until both directions are done, then closes a
// and b and returns. Pipe owns a and b from the call on: it always closes
// both, and the caller must not read from or write to them concurrently.
// It copies a→b on the calling goroutine and b→a on one goroutine of its
// own, and it waits for both.
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
// How a direction copies depends on its ends, so that an idle connection
// holds as little memory as possible:
//   - With idle == 0, a direction between a *net.TCPConn and a
//     *net.TCPConn or *net.UnixConn is a plain io.Copy on the conns as
//     given, which the kernel does with splice(2): no user buffer at all.
//   - A direction that reads from a *net.TCPConn or *net.UnixConn reads
//     its socket directly and waits for it with no buffer, borrowing a
//     pooled 128 KiB buffer only for a read and the write that follows.
//   - A direction that reads from a [ReadWaiter] waits with WaitRead and
//     borrows the 128 KiB buffer likewise.
//   - Any other source is read into a 2 KiB buffer of the direction's own
//     while it is quiet; a read that fills it moves the direction to a
//     pooled 128 KiB buffer, which goes back to the pool on the first read
//     that fills neither it nor a TLS record (16 KiB).
//
// With idle > 0 every direction stamps an atomic last-activity time that
// one timer checks, because setting a deadline before every read costs a
// timer update per read; the price is losing splice.
func Pipe(ctx context.Context, a, b net.Conn, idle time.Duration) (Stats, error) {
	p := &pipe{a: a, b: b, idle: idle, start: time.Now()}
	stopOnCancel := context.AfterFunc(ctx, func() {
		p.stop(fmt.Errorf("relay stopped: %w", context.Cause(ctx)))
	})
	if idle > 0 {
		p.mu.Lock()
		p.idleTimer = time.AfterFunc(idle, p.checkIdle)
		p.mu.Unlock()
	}

	// One direction runs here rather than in a goroutine of its own: a
	// goroutine costs at least a stack for as long as the connection
	// lives, and this one would only wait.
	p.wg.Add(1)
	go p.bToA()
	p.aToB()
	p.wg.Wait()

	stopOnCancel()
	p.mu.Lock()
	p.finished = true
	if p.idleTimer != nil {
		p.idleTimer.Stop()
	}
	stopped := p.stopped
	p.mu.Unlock()
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
	// wg counts the bToA goroutine; waiting on it makes p.ba visible.
	wg     sync.WaitGroup
	ab, ba result

	mu sync.Mutex // guards the fields below
	// stopped is why Pipe closed the conns itself (ctx or idle), if it did.
	stopped   error
	finished  bool // both directions are done; stop no longer applies
	idleTimer *time.Timer
}

type result struct {
	n   int64
	err error // nil for EOF and other ordinary ends
}

// aToB and bToA are the two directions, named so a stack dump shows
// which one is blocked.
func (p *pipe) aToB() {
	p.ab = p.forward(p.b, p.a)
}

func (p *pipe) bToA() {
	defer p.wg.Done()
	p.ba = p.forward(p.a, p.b)
}

// stop closes both conns on behalf of ctx or the idle timer, recording
// why, unless the copies have finished or another stop came first.
func (p *pipe) stop(why error) {
	p.mu.Lock()
	if p.finished || p.stopped != nil {
		p.mu.Unlock()
		return
	}
	p.stopped = why
	p.mu.Unlock()
	p.closeBoth()
}

// checkIdle runs on the idle timer: it stops the pipe if nothing moved
// for p.idle, and otherwise re-arms the timer for when that would be.
func (p *pipe) checkIdle() {
	quiet := time.Since(p.start) - time.Duration(p.last.Load())
	if quiet >= p.idle {
		p.stop(fmt.Errorf("relay: no bytes moved for %v: %w", p.idle, ErrIdle))
		return
	}
	p.mu.Lock()
	if !p.finished {
		p.idleTimer.Reset(p.idle - quiet)
	}
	p.mu.Unlock()
}

// forward copies src to dst, then propagates the end: half-close on EOF,
// full close of both on anything else.
func (p *pipe) forward(dst, src net.Conn) result {
	n, err := p.copy(dst, src)
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

// copy copies src to dst by the cheapest means their types allow (see
// Pipe). It returns a nil error at EOF.
func (p *pipe) copy(dst, src net.Conn) (int64, error) {
	if p.idle == 0 && spliceable(dst, src) {
		// dst and src as given, not wrapped, so io.Copy finds
		// *net.TCPConn's ReadFrom/WriteTo and the kernel splices.
		return io.Copy(dst, src)
	}
	switch s := src.(type) {
	case *net.TCPConn:
		return p.copyRaw(dst, s)
	case *net.UnixConn:
		return p.copyRaw(dst, s)
	case ReadWaiter:
		return p.copyWaiting(dst, src, s)
	}
	return p.copySmall(dst, src)
}

// spliceable reports whether io.Copy(dst, src) moves the bytes with
// splice(2): *net.TCPConn's ReadFrom splices from a TCP or UNIX stream
// socket, and its WriteTo into a UNIX stream socket.
func spliceable(dst, src net.Conn) bool {
	isTCP := func(c net.Conn) bool { _, ok := c.(*net.TCPConn); return ok }
	isStream := func(c net.Conn) bool {
		u, ok := c.(*net.UnixConn)
		return ok && u.LocalAddr().Network() == "unix"
	}
	return isTCP(dst) && (isTCP(src) || isStream(src)) || isTCP(src) && isStream(dst)
}

// copyRaw copies from a socket by reading its descriptor itself, inside
// RawConn.Read, so that it can return the big buffer to the pool before
// the poller parks it: an idle direction holds no buffer at all. The
// reads are those *net.TCPConn.Read would make.
func (p *pipe) copyRaw(dst net.Conn, src syscall.Conn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var buf *[bigSize]byte
	defer func() {
		if buf != nil {
			bigPool.Put(buf)
		}
	}()
	var nr int
	var rerr error
	read := func(fd uintptr) bool {
		if buf == nil {
			buf = bigPool.Get().(*[bigSize]byte)
		}
		for {
			nr, rerr = syscall.Read(int(fd), buf[:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			bigPool.Put(buf)
			buf = nil
			return false // wait for readability, then call again
		}
		return true
	}
	var n int64
	for {
		if err := rc.Read(read); err != nil {
			return n, err // closed, or a deadline someone else set
		}
		if rerr != nil {
			return n, os.NewSyscallError("read", rerr)
		}
		if nr <= 0 {
			return n, nil // EOF
		}
		k, err := p.write(dst, buf[:nr])
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// copyWaiting copies from a ReadWaiter, holding the big buffer only from
// the end of a wait to the end of the write that follows.
func (p *pipe) copyWaiting(dst, src net.Conn, w ReadWaiter) (int64, error) {
	var n int64
	for {
		if err := w.WaitRead(); err != nil {
			if err == io.EOF {
				return n, nil
			}
			return n, err
		}
		buf := bigPool.Get().(*[bigSize]byte)
		nr, rerr := src.Read(buf[:])
		var werr error
		if nr > 0 {
			var k int
			k, werr = p.write(dst, buf[:nr])
			n += int64(k)
		}
		bigPool.Put(buf)
		switch {
		case werr != nil:
			return n, werr
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// copySmall copies from a source that can only be waited on by reading:
// it waits in a small buffer of its own and moves to a pooled big one
// while reads fill what they are given (see Pipe).
func (p *pipe) copySmall(dst, src net.Conn) (int64, error) {
	small := make([]byte, smallSize)
	var big *[bigSize]byte
	defer func() {
		if big != nil {
			bigPool.Put(big)
		}
	}()
	var n int64
	for {
		buf := small
		if big != nil {
			buf = big[:]
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			k, werr := p.write(dst, buf[:nr])
			n += int64(k)
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		case nr == len(buf) && big == nil:
			big = bigPool.Get().(*[bigSize]byte)
		case nr < min(len(buf), bulkRead) && big != nil:
			// The source has caught up: the next read may wait, and must
			// not hold the big buffer while it does.
			bigPool.Put(big)
			big = nil
		}
	}
}

// write writes b to dst, stamping activity around it when idle is
// tracked.
func (p *pipe) write(dst net.Conn, b []byte) (int, error) {
	if p.idle > 0 {
		p.touch()
	}
	n, err := dst.Write(b)
	if n > 0 && p.idle > 0 {
		p.touch()
	}
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return n, err
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
