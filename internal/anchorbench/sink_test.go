package anchorbench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// rfbGreeting opens every connection, as an RFB 3.3 server would: the
// sink sends it, the client answers with it, and then the bytes are the
// benchmark's. The vnc connector checks the start of the RFB handshake
// before it relays (3.3 leaves the rest raw); the other paths carry the 24
// bytes like any others, so every path does the same work.
const rfbGreeting = "RFB 003.003\n"

// rfbHello is the client side of the opening, for every dialer.
func rfbHello(ctx context.Context, c net.Conn) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
		defer c.SetDeadline(time.Time{})
	}
	var v [len(rfbGreeting)]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return fmt.Errorf("read RFB greeting: %w", err)
	}
	if string(v[:]) != rfbGreeting {
		return fmt.Errorf("sink greeted %q, want %q", v, rfbGreeting)
	}
	if _, err := io.WriteString(c, rfbGreeting); err != nil {
		return fmt.Errorf("answer RFB greeting: %w", err)
	}
	return nil
}

// The first byte a client sends picks what the sink does with the rest of
// the connection.
const (
	modeDownload = 'D' // stream msgSize writes to the client until it goes
	modeUpload   = 'U' // swallow, sending one ack byte per ackEvery bytes
	modeEcho     = 'E' // echo every byte back
)

const (
	// msgSize is the message size of the throughput figures: one 64 KiB
	// write by the sink (download) or by the client (upload).
	msgSize = 64 << 10
	// ackEvery is how many uploaded bytes one ack byte stands for. The
	// client needs acks to know the bytes arrived: through websockify a
	// half-close cannot be relayed, and buffers in three processes would
	// otherwise hide megabytes still in flight.
	ackEvery = 1 << 20
)

// sink is the TCP server at the far end of every path. It listens twice on
// 127.0.0.1: in plain TCP (what the proxies connect to) and in mutual TLS
// (the direct-TLS floor). It runs in the test process, so it costs every
// path the same.
type sink struct {
	tcp, tls net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startSink listens and serves until close.
func startSink(tlsCfg *tls.Config) (*sink, error) {
	s := &sink{conns: make(map[net.Conn]struct{})}
	var err error
	if s.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start sink: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.tcp.Close()
		return nil, fmt.Errorf("start sink: %w", err)
	}
	s.tls = tls.NewListener(l, tlsCfg)
	for _, ln := range []net.Listener{s.tcp, s.tls} {
		s.wg.Go(func() { s.serve(ln) })
	}
	return s, nil
}

func (s *sink) addr() string    { return s.tcp.Addr().String() }
func (s *sink) tlsAddr() string { return s.tls.Addr().String() }

func (s *sink) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by close; the listeners fail for no other reason here
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// handle serves one connection until it fails, which is how every
// connection ends: the client or proxy closes it.
func (s *sink) handle(c net.Conn) {
	if _, err := io.WriteString(c, rfbGreeting); err != nil {
		return
	}
	var v [len(rfbGreeting)]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return
	}
	var mode [1]byte
	if _, err := c.Read(mode[:]); err != nil {
		return
	}
	buf := make([]byte, msgSize)
	switch mode[0] {
	case modeDownload:
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case modeUpload:
		var got, acked int64
		ack := []byte{'A'}
		for {
			n, err := c.Read(buf)
			got += int64(n)
			for got-acked >= ackEvery {
				if _, err := c.Write(ack); err != nil {
					return
				}
				acked += ackEvery
			}
			if err != nil {
				return
			}
		}
	case modeEcho:
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// close stops both listeners, closes every connection and waits for the
// sink's goroutines.
func (s *sink) close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := errors.Join(s.tcp.Close(), s.tls.Close())
	s.wg.Wait()
	return err
}
