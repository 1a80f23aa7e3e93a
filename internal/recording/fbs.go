package recording

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sync/semaphore"
)

// Magic starts every FBS stream.
const Magic = "FBS 001.000\n"

// Meta is a recording's JSON sidecar.
type Meta struct {
	Session   string    `json:"session"`
	User      string    `json:"user"`
	Connector string    `json:"connector"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended"`
	// DurationMS is the time of the last block.
	DurationMS int64 `json:"duration_ms"`
	// RFBBytes is the recorded RFB data (RDP data, header block included,
	// in an RDP recording); FileBytes the .fbs.gz file.
	RFBBytes  int64  `json:"rfb_bytes"`
	FileBytes int64  `json:"file_bytes"`
	SHA256    string `json:"sha256"`
	// End is why the recording ended: "closed" (the connection ended),
	// "size cap" (MaxBytes reached; the viewer's connection went on
	// unrecorded) or "unparseable" (the WebSocket stream was not one the
	// recorder could read).
	End string `json:"end"`
	// PointerEvents is how many records the pointer track (NAME.pointer)
	// holds; PointerEnd says why it stopped early, if it did.
	PointerEvents int64  `json:"pointer_events"`
	PointerEnd    string `json:"pointer_end,omitempty"`
	Format        string `json:"format"`
	// Kind is what the data is: "vnc" (RFB; also a sidecar without the
	// field, from before RDP recordings) or "rdp".
	Kind string `json:"kind,omitempty"`
	// RDP is an RDP recording's header (rdp.go), from its first block.
	RDP *RDPHeader `json:"rdp,omitempty"`
}

// Writer records one connection. Its Write never fails the caller: a
// recording that cannot go on ends, and the error is kept for Close.
//
// Write only frames and copies the data: a goroutine of the Writer's own
// compresses and writes it, so the relay it taps runs at its own speed
// while the compressor keeps up (a busy desktop sends tens of MB/s; the
// compressor takes hundreds, BenchmarkRelayRecording). When it cannot, at
// most queueBytes wait, and then Write waits for it: a recording loses
// nothing, and a viewer whose stream outruns it is slowed to the
// compressor's pace rather than recorded with holes.
type Writer struct {
	mu     sync.Mutex // orders blocks; guards meta, done, last
	f      *os.File
	sum    hash.Hash
	count  *countWriter
	now    func() time.Time
	start  time.Time
	max    int64
	framed int64 // bytes of blocks recorded, framing included (the cap's measure)
	meta   Meta
	done   bool  // the end block is queued
	closed bool  // q is closed
	last   int64 // ms of the last block

	q        chan *[]byte        // framed blocks, in order, for compress
	budget   *semaphore.Weighted // bytes queued, at most queueBytes
	failed   atomic.Bool         // compress could not write: queue no more
	capped   atomic.Bool         // ended at the size cap (Capped, read per relayed read)
	finished chan struct{}       // compress has flushed and closed the gzip stream
	err      error               // compress's first error; read after finished

	// The pointer track (pointer.go), written as it comes: small.
	ptr        *os.File
	ptrBuf     *bufio.Writer
	ptrLast    int64 // ms of the last record
	ptrButtons byte
	ptrErr     error
}

// queueBytes bounds the framed data waiting for the compressor.
const queueBytes = 8 << 20

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Create starts a recording at path (which must not exist; the file is
// made 0600) with its sidecar beside it, ending at maxBytes of recorded
// blocks, RFB data with its framing (0: no cap). now is the clock; nil means time.Now.
func Create(path string, meta Meta, maxBytes int64, now func() time.Time) (*Writer, error) {
	if !strings.HasSuffix(path, ".fbs.gz") {
		return nil, fmt.Errorf("recording %s: name must end in .fbs.gz", path)
	}
	if now == nil {
		now = time.Now
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	w := &Writer{f: f, sum: sha256.New(), now: now, max: maxBytes, meta: meta,
		q: make(chan *[]byte, 256), budget: semaphore.NewWeighted(queueBytes), finished: make(chan struct{})}
	w.count = &countWriter{w: io.MultiWriter(f, w.sum)}
	if w.ptr, err = os.OpenFile(strings.TrimSuffix(path, ".fbs.gz")+".pointer", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create recording: %w", err)
	}
	w.ptrBuf = bufio.NewWriterSize(w.ptr, 4<<10)
	// BestSpeed, and klauspost's deflate rather than the standard
	// library's: framebuffer updates are mostly compressed already, and
	// it passes those through about three times faster (BenchmarkTap).
	// The file is plain gzip all the same.
	gz, _ := gzip.NewWriterLevel(w.count, gzip.BestSpeed)
	buf := bufio.NewWriterSize(gz, 64<<10)
	w.start = now()
	w.meta.Started = w.start.UTC()
	w.meta.Format = "FBS 001.000, gzip"
	if _, err := buf.WriteString(Magic); err != nil {
		f.Close()
		w.ptr.Close()
		os.Remove(path)
		os.Remove(w.ptr.Name())
		return nil, fmt.Errorf("write recording: %w", err)
	}
	go w.compress(w.q, gz, buf)
	return w, nil
}

// compress writes the queued blocks until the queue is closed, then ends
// the gzip stream.
func (w *Writer) compress(q <-chan *[]byte, gz *gzip.Writer, buf *bufio.Writer) {
	defer close(w.finished)
	for b := range q {
		if w.err == nil {
			if _, err := buf.Write(*b); err != nil {
				w.err = err
				w.failed.Store(true)
			}
		}
		w.budget.Release(weight(*b))
		*b = (*b)[:0]
		blockPool.Put(b)
	}
	w.err = errors.Join(w.err, buf.Flush(), gz.Close())
}

var blockPool = sync.Pool{New: func() any { return new([]byte) }}

func weight(b []byte) int64 { return min(int64(cap(b)), queueBytes) }

// Write records p as one block stamped with the time now.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || w.failed.Load() || len(p) == 0 {
		return len(p), nil
	}
	// The cap holds for the stream as recorded, framing included: 1-byte
	// frames would otherwise make it 12 times the cap.
	n := framedLen(len(p))
	if w.max > 0 && w.framed+n > w.max {
		w.endLocked("size cap")
		w.capped.Store(true)
		return len(p), nil
	}
	w.framed += n
	ms := w.now().Sub(w.start).Milliseconds()
	w.last = max(w.last, ms) // monotonic, whatever the clock does
	w.block(p, w.last)
	w.meta.RFBBytes += int64(len(p))
	return len(p), nil
}

// Pointer records the viewer's pointer at x, y with buttons down, now.
func (w *Writer) Pointer(x, y uint16, buttons byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done || w.ptrErr != nil || w.meta.PointerEnd != "" {
		return
	}
	ms := max(w.ptrLast, w.now().Sub(w.start).Milliseconds())
	if w.meta.PointerEvents > 0 && buttons == w.ptrButtons && ms-w.ptrLast < pointerEvery {
		return
	}
	if w.meta.PointerEvents == maxPointerEvents {
		w.meta.PointerEnd = "size cap"
		return
	}
	var rec [pointerRecord]byte
	binary.BigEndian.PutUint32(rec[0:], uint32(ms))
	binary.BigEndian.PutUint16(rec[4:], x)
	binary.BigEndian.PutUint16(rec[6:], y)
	rec[8] = buttons
	if _, err := w.ptrBuf.Write(rec[:]); err != nil {
		w.ptrErr = err
		return
	}
	w.ptrLast, w.ptrButtons = ms, buttons
	w.meta.PointerEvents++
}

// StopPointer ends the pointer track early with reason.
func (w *Writer) StopPointer(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.meta.PointerEnd == "" {
		w.meta.PointerEnd = reason
	}
}

// Stop ends the recording early with reason; later writes are ignored.
func (w *Writer) Stop(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endLocked(reason)
}

// Capped reports whether the recording ended at its size cap: what the
// relay carries from then on would be seen unrecorded, so a relay that
// must not be viewed unrecorded ends (Tap, the RDP recorder).
func (w *Writer) Capped() bool { return w.capped.Load() }

// framedLen is the size of a block of n bytes of data: length, data
// padded to 4 bytes, time.
func framedLen(n int) int64 { return int64(4 + n + (4-n%4)%4 + 4) }

// block queues p framed as an FBS block: length, data padded to 4 bytes,
// time.
func (w *Writer) block(p []byte, ms int64) {
	n := int(framedLen(len(p)))
	bp := blockPool.Get().(*[]byte)
	b := *bp
	if cap(b) < n {
		b = make([]byte, 0, max(n, 4<<10))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = append(b, p...)
	b = append(b, make([]byte, (4-len(p)%4)%4)...)
	b = binary.BigEndian.AppendUint32(b, uint32(ms))
	*bp = b
	w.budget.Acquire(context.Background(), weight(b)) // cannot fail: no deadline, weight <= the budget
	w.q <- bp
}

func (w *Writer) endLocked(reason string) {
	if w.done {
		return
	}
	w.done = true
	w.meta.End = reason
	w.block(nil, w.last)
}

// Close ends the recording (reason "closed" unless it ended before),
// waits for the queued blocks to be written, closes the file and writes
// the sidecar. It returns the sidecar.
func (w *Writer) Close() (Meta, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endLocked("closed")
	if !w.closed {
		w.closed = true
		close(w.q)
	}
	<-w.finished
	err := errors.Join(w.err, w.ptrErr, w.ptrBuf.Flush(), w.ptr.Close())
	if serr := w.f.Sync(); err == nil {
		err = serr
	}
	err = errors.Join(err, w.f.Close())
	w.meta.Ended = w.now().UTC()
	w.meta.DurationMS = w.last
	w.meta.FileBytes = w.count.n
	w.meta.SHA256 = hex.EncodeToString(w.sum.Sum(nil))
	name := strings.TrimSuffix(w.f.Name(), ".fbs.gz") + ".json"
	b, _ := json.MarshalIndent(w.meta, "", "  ")
	// Written aside and renamed: a reader (the admin list) sees no
	// sidecar or a whole one, and a crash mid-write leaves none.
	if werr := os.WriteFile(name+".tmp", append(b, '\n'), 0o600); werr != nil {
		err = errors.Join(err, werr)
	} else if werr := os.Rename(name+".tmp", name); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		return w.meta, fmt.Errorf("close recording %s: %w", w.f.Name(), err)
	}
	return w.meta, nil
}

// Block is one recorded piece of the stream.
type Block struct {
	MS   uint32
	Data []byte
}

// maxBlock bounds one block a reader accepts: the recorder writes what
// one WebSocket frame carried, far less.
const maxBlock = 64 << 20

// Read parses an uncompressed FBS stream. ended says whether it had its
// end block; a stream cut short gives its whole blocks and ended false.
// It holds the whole stream: a replay streams with a Reader instead.
func Read(r io.Reader) (blocks []Block, ended bool, err error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, false, err
	}
	for {
		b, err := rd.Next()
		switch {
		case err == io.EOF:
			return blocks, rd.Ended(), nil
		case err != nil:
			return blocks, false, err
		}
		blocks = append(blocks, Block{MS: b.MS, Data: bytes.Clone(b.Data)})
	}
}

// Reader reads an uncompressed FBS stream one block at a time, in one
// buffer as large as the largest block: what a replay holds, whatever
// the recording's size.
type Reader struct {
	br    *bufio.Reader
	hdr   [4]byte
	buf   []byte
	n     int // blocks read
	ended bool
}

// NewReader checks the stream's magic.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != Magic {
		return nil, fmt.Errorf("not an FBS 001.000 stream (starts %q)", magic)
	}
	return &Reader{br: br}, nil
}

// Next returns the next block, whose Data is good until the next call;
// io.EOF after the last (Ended says whether the stream had its end block
// or was cut short).
func (r *Reader) Next() (Block, error) {
	if r.ended {
		return Block{}, io.EOF
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if err == io.EOF {
			return Block{}, io.EOF
		}
		return Block{}, fmt.Errorf("block %d: %w", r.n, err)
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n > maxBlock {
		return Block{}, fmt.Errorf("block %d: %d bytes, limit %d", r.n, n, maxBlock)
	}
	size := int((n+3)/4*4 + 4)
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	data := r.buf[:size]
	if _, err := io.ReadFull(r.br, data); err != nil {
		return Block{}, fmt.Errorf("block %d: %w", r.n, err)
	}
	if n == 0 {
		r.ended = true
		return Block{}, io.EOF
	}
	r.n++
	return Block{MS: binary.BigEndian.Uint32(data[size-4:]), Data: data[:n]}, nil
}

// Ended reports whether the stream had its end block (once Next has
// returned io.EOF).
func (r *Reader) Ended() bool { return r.ended }
