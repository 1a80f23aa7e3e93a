package forward

import (
	"encoding/binary"
	"errors"
	"net"
	"time"
)

// yamux's frame header (hashicorp/yamux spec.md): version, type, flags,
// stream ID, length; a data frame's length bytes of body follow it.
const (
	muxHeader   = 12
	muxTypeData = 0
	muxTypePing = 2
	muxFlagSYN  = 1
)

// Ping limits of a guarded connection: a burst, then one a second. An
// honest peer pings once per MuxConfig's KeepAliveInterval (15 s).
const (
	pingBurst = 16
	pingEvery = time.Second
)

// ErrPingFlood is what a guarded connection's Read returns once its peer
// has sent pings faster than the limit.
var ErrPingFlood = errors.New("tunnel: the peer sends pings faster than one a second")

// GuardPings returns c with the yamux frames read from it watched for
// pings: past a burst of pingBurst, more than one a second makes Read
// fail with ErrPingFlood (and yamux end the session), after calling
// onFlood if set.
//
// Why: yamux answers each ping in a goroutine of its own, which waits
// (up to ConnectionWriteTimeout) for its turn to write. A peer that
// floods pings and reads nothing makes the reader side spawn them
// without bound: a few MB/s of 12-byte pings is hundreds of thousands of
// goroutines.
func GuardPings(c net.Conn, onFlood func()) net.Conn {
	return &pingGuard{Conn: c, onFlood: onFlood, tokens: pingBurst, last: time.Now()}
}

type pingGuard struct {
	net.Conn
	onFlood func()
	scan    frameScanner
	tokens  float64
	last    time.Time
	err     error
}

func (g *pingGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	if pings := g.scan.feed(p[:n]); pings > 0 && !g.spend(pings) {
		g.err = ErrPingFlood
		if g.onFlood != nil {
			g.onFlood()
		}
		return 0, g.err
	}
	return n, err
}

// spend takes n pings from the bucket; false when it runs dry.
func (g *pingGuard) spend(n int) bool {
	now := time.Now()
	g.tokens = min(pingBurst, g.tokens+float64(now.Sub(g.last))/float64(pingEvery))
	g.last = now
	g.tokens -= float64(n)
	return g.tokens >= 0
}

// frameScanner follows yamux frames in a byte stream given in pieces of
// any size and counts the ping requests (SYN) among them. It keeps at
// most one header. On a header yamux itself would refuse (another
// version, an unknown type) it stops counting: yamux ends the session.
type frameScanner struct {
	hdr  [muxHeader]byte
	have int    // bytes of hdr gathered
	skip uint32 // bytes of a data frame's body still to pass over
	lost bool
}

// feed scans p and returns how many ping requests it completed.
func (s *frameScanner) feed(p []byte) (pings int) {
	for len(p) > 0 && !s.lost {
		if s.skip > 0 {
			k := uint32(min(len(p), int(min(s.skip, 1<<30))))
			s.skip -= k
			p = p[k:]
			continue
		}
		k := copy(s.hdr[s.have:], p)
		s.have += k
		p = p[k:]
		if s.have < muxHeader {
			return pings
		}
		s.have = 0
		version, typ := s.hdr[0], s.hdr[1]
		flags := binary.BigEndian.Uint16(s.hdr[2:])
		length := binary.BigEndian.Uint32(s.hdr[8:])
		switch {
		case version != 0 || typ > 3:
			s.lost = true
		case typ == muxTypeData:
			s.skip = length
		case typ == muxTypePing && flags&muxFlagSYN != 0:
			pings++
		}
	}
	return pings
}
