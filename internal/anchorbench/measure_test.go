package anchorbench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// echoSize is the round-trip message: about an RFB pointer or key
	// event with its WebSocket framing, the traffic a user feels.
	echoSize = 64
	// manyConns is the connection count of the busiest and idle figures.
	manyConns = 1000
	// openTimeout bounds opening manyConns connections at once; a path
	// that has not answered by then counts the connection as not opened.
	openTimeout = 10 * time.Second
	// upWindow bounds uploaded bytes not yet acked, so the sender cannot
	// run ahead of the sink by more than the buffers on the way hold.
	upWindow = 8 << 20
	// warmBytes move before a throughput figure is timed, so TCP windows
	// have opened and every process has its buffers.
	warmBytes = 4 << 20
	// ioGrace is how long past its end a timed measurement may wait for
	// one stuck read or write before the deadline breaks it.
	ioGrace = 10 * time.Second
)

// openEcho dials through a path, selects echo mode and proves the whole
// way works with one 64-byte round trip, all within ctx.
func openEcho(ctx context.Context, dial dialFunc) (net.Conn, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	msg := make([]byte, 1+echoSize)
	msg[0] = modeEcho
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, fmt.Errorf("first echo: %w", err)
	}
	if _, err := io.ReadFull(c, msg[:echoSize]); err != nil {
		c.Close()
		return nil, fmt.Errorf("first echo: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// roundTrip sends msg and reads back as many bytes into buf.
func roundTrip(c net.Conn, msg, buf []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("echo write: %w", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo read: %w", err)
	}
	return nil
}

// startDownload selects download mode and reads warmBytes.
func startDownload(c net.Conn, buf []byte) error {
	if _, err := c.Write([]byte{modeDownload}); err != nil {
		return fmt.Errorf("start download: %w", err)
	}
	for n := 0; n < warmBytes; n += len(buf) {
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("start download: %w", err)
		}
	}
	return nil
}

// downloadFor measures the sink-to-client rate on c for d, in bytes/s.
func downloadFor(c net.Conn, d time.Duration) (float64, error) {
	buf := make([]byte, msgSize)
	if err := startDownload(c, buf); err != nil {
		return 0, err
	}
	c.SetDeadline(time.Now().Add(d + ioGrace))
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		k, err := io.ReadFull(c, buf)
		n += int64(k)
		if err != nil {
			return 0, fmt.Errorf("download: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// uploader sends msgSize messages and counts the sink's acks.
type uploader struct {
	c          net.Conn
	msg, acks  []byte
	sent, sunk int64
}

// newUploader selects upload mode on c and sends warmBytes.
func newUploader(c net.Conn) (*uploader, error) {
	u := &uploader{c: c, msg: make([]byte, msgSize), acks: make([]byte, 64)}
	if _, err := c.Write([]byte{modeUpload}); err != nil {
		return nil, fmt.Errorf("start upload: %w", err)
	}
	for u.sent < warmBytes {
		if err := u.send(); err != nil {
			return nil, err
		}
	}
	if err := u.drain(); err != nil {
		return nil, err
	}
	u.sent, u.sunk = 0, 0
	return u, nil
}

// send writes one message, first waiting for acks if upWindow bytes are
// unacknowledged.
func (u *uploader) send() error {
	for u.sent-u.sunk >= upWindow {
		if err := u.readAcks(); err != nil {
			return err
		}
	}
	if _, err := u.c.Write(u.msg); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	u.sent += msgSize
	return nil
}

func (u *uploader) readAcks() error {
	n, err := u.c.Read(u.acks)
	u.sunk += int64(n) * ackEvery
	if err != nil {
		return fmt.Errorf("upload: read acks: %w", err)
	}
	return nil
}

// drain tops the upload up to a whole number of acks and waits until the
// sink has acknowledged every byte.
func (u *uploader) drain() error {
	for u.sent%ackEvery != 0 {
		if err := u.send(); err != nil {
			return err
		}
	}
	for u.sunk < u.sent {
		if err := u.readAcks(); err != nil {
			return err
		}
	}
	return nil
}

// uploadFor measures the client-to-sink rate on c for about d, in
// bytes/s, counting only bytes the sink has acknowledged.
func uploadFor(c net.Conn, d time.Duration) (float64, error) {
	u, err := newUploader(c)
	if err != nil {
		return 0, err
	}
	c.SetDeadline(time.Now().Add(d + ioGrace))
	start := time.Now()
	for time.Since(start) < d {
		if err := u.send(); err != nil {
			return 0, err
		}
	}
	if err := u.drain(); err != nil {
		return 0, err
	}
	return float64(u.sunk) / time.Since(start).Seconds(), nil
}

// echoSamples times n round trips of echoSize bytes on c, which must be in
// echo mode (openEcho), after 100 untimed ones.
func echoSamples(c net.Conn, n int) ([]time.Duration, error) {
	msg := make([]byte, echoSize)
	buf := make([]byte, echoSize)
	c.SetDeadline(time.Now().Add(time.Minute))
	defer c.SetDeadline(time.Time{})
	for range 100 {
		if err := roundTrip(c, msg, buf); err != nil {
			return nil, err
		}
	}
	rtts := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if err := roundTrip(c, msg, buf); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	return rtts, nil
}

// percentile returns the p-th percentile (0 < p ≤ 100) of ds by the
// nearest-rank method; it sorts ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// failures counts why connections did not open, by the innermost cause.
type failures map[string]int

func (f failures) add(err error) {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	f[s]++
}

// String lists the causes, most frequent first.
func (f failures) String() string {
	keys := slices.SortedFunc(maps.Keys(f), func(a, b string) int {
		return cmp.Or(cmp.Compare(f[b], f[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", f[k], k))
	}
	return strings.Join(parts, "; ")
}

// openMany opens n echo connections through dial at once, within
// openTimeout, and returns those that opened and why the others did not.
func openMany(dial dialFunc, n int) ([]net.Conn, failures) {
	return openManyBounded(dial, n, n, openTimeout)
}

// openManyBounded is openMany with at most parallel dials in flight and
// timeout for all of them.
func openManyBounded(dial dialFunc, n, parallel int, timeout time.Duration) ([]net.Conn, failures) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], errs[i] = openEcho(ctx, dial)
		})
	}
	wg.Wait()
	fails := failures{}
	var opened []net.Conn
	for i, c := range conns {
		if errs[i] != nil {
			fails.add(errs[i])
			continue
		}
		opened = append(opened, c)
	}
	return opened, fails
}

// closeAll closes every conn, concurrently, and waits.
func closeAll(conns []net.Conn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
}

// busyResult is the echo rate of n connections all busy at once.
type busyResult struct {
	opened  int
	perSec  float64 // round trips per second, all connections together
	fails   failures
	errored int // connections that failed during the timed run
}

// busyFor opens n echo connections, then has each do back-to-back 64-byte
// round trips for d, and counts the round trips finished within d.
func busyFor(dial dialFunc, n int, d time.Duration) busyResult {
	conns, fails := openMany(dial, n)
	defer closeAll(conns)
	var total, errored atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for _, c := range conns {
		wg.Go(func() {
			c.SetDeadline(end.Add(ioGrace))
			msg := make([]byte, echoSize)
			buf := make([]byte, echoSize)
			var k int64
			for {
				if err := roundTrip(c, msg, buf); err != nil {
					errored.Add(1)
					break
				}
				if !time.Now().Before(end) {
					break
				}
				k++
			}
			total.Add(k)
		})
	}
	wg.Wait()
	return busyResult{
		opened:  len(conns),
		perSec:  float64(total.Load()) / d.Seconds(),
		fails:   fails,
		errored: int(errored.Load()),
	}
}

// idleResult is the memory a proxy holds for n idle connections.
type idleResult struct {
	opened       int
	fails        failures
	base, loaded memory // the proxy's process tree before and with them
}

// perConn returns the growth of RSS and PSS per opened connection, in KiB.
func (r idleResult) perConn() (rss, pss float64) {
	if r.opened == 0 {
		return 0, 0
	}
	return float64(r.loaded.rss-r.base.rss) / float64(r.opened),
		float64(r.loaded.pss-r.base.pss) / float64(r.opened)
}

// idleMany opens n echo connections through in at once and, with all of
// them open and idle, reads the memory of the proxy's process tree. A
// direct path has no proxy: its memory is zero.
func idleMany(in *instance, n int) (idleResult, error) {
	var r idleResult
	var err error
	if in.proc != nil {
		if r.base, err = treeMemory(in.proc.pid()); err != nil {
			return r, fmt.Errorf("idle %s: %w", in.spec.name, err)
		}
	}
	conns, fails := openMany(in.dial, n)
	defer closeAll(conns)
	r.opened, r.fails = len(conns), fails
	if in.proc != nil {
		if r.loaded, err = treeMemory(in.proc.pid()); err != nil {
			return r, fmt.Errorf("idle %s: %w", in.spec.name, err)
		}
	}
	return r, nil
}

var errNoConns = errors.New("no connection opened")
