// Package rdpfilter watches the RDP byte stream a browser client sends to
// the server, after the gateway terminated the server's TLS, and enforces
// a profile's channel policy on it: the static virtual channels for the
// clipboard (cliprdr) and for drives, printers and smart cards (rdpdr) are
// taken out of the client's MCS Connect Initial, so the server never opens
// them and nothing can be copied through them either way.
//
// A channel is taken out by renaming it in place in the client's network
// data (CS_NET) to [BlockedName], not by deleting its entry: the server then
// still answers with one channel id per entry, and the client's list of
// channels and the server's ids stay in step (IronRDP pairs them by
// position). The server has nothing behind a channel of that name, so what
// the client sends on it is dropped there, and the server sends nothing
// on it.
//
// A one-way clipboard (in: browser to session only, out: session to
// browser only) keeps cliprdr open and reads its PDUs (MS-RDPECLIP) both
// ways: the server's stream is framed too, for the channel ids of its MCS
// Connect Response, and the side whose content must not cross has every
// Format List replaced by an empty one and every data response by a
// failure, so the other side never learns of, nor gets, its clipboard
// (see cliprdr.go).
//
// The filter fails closed: bytes it cannot frame, a Connect Initial it
// cannot read to the end, a second Connect Initial, a Channel Join
// Request for a channel the server did not assign, or compressed
// clipboard data end the connection. It is pure: no I/O, no logging
// (what it blocks it reports through [Stream.OnBlock]).
package rdpfilter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// BlockedName is what a blocked channel is renamed to (7 letters and the
// terminating NUL, as channel names are).
const BlockedName = "blocked"

// Policy says which channels a session may open.
type Policy struct {
	// ClipIn lets clipboard content go from the client (the browser) to
	// the session, ClipOut from the session to the client. With neither,
	// cliprdr is taken out; with one, its PDUs are filtered.
	ClipIn, ClipOut bool
	Drives          bool // rdpdr: drives, printers, smart cards, ports
	// Xrdp adapts the client's requests to xrdp in a desktop's seal: an
	// automatic logon (the INFO_AUTOLOGON flag of the Client Info PDU,
	// which xrdp's autorun needs to skip its own login dialog, as native
	// clients get with a user name and any password) and at most 24-bit
	// colour (the browser client draws xrdp's 32-bit bitmaps sheared).
	// xrdp checks no password: the seal's Xvnc is its only target.
	Xrdp bool
	// NLA says the client logged on inside CredSSP (the server chose
	// HYBRID or HYBRID_EX). The client may still copy its password into
	// the Client Info PDU (IronRDP does), which the relay holds in the
	// clear between the WebSocket and the server's TLS; the filter
	// overwrites it there with zeros, so it goes no further than the
	// relay's buffer. The server, which checked the logon in CredSSP,
	// does not need it again.
	NLA bool
}

// Connected reports whether the client's MCS Connect Initial went by:
// with NLA, a connection that ends before it ended inside CredSSP.
func (s *Stream) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// blocked reports whether p forbids the channel named name.
func (p Policy) blocked(name string) bool {
	switch strings.ToLower(name) {
	case "cliprdr":
		return !p.ClipIn && !p.ClipOut
	case "rdpdr":
		return !p.Drives
	}
	return false
}

// Limits on what the filter holds while it waits for a whole frame.
const (
	maxFrame = 1 << 16 // a TPKT's length field allows no more
	maxDER   = 1 << 16 // a CredSSP TSRequest
)

// Stream is one connection's two streams: what the client sends (Feed)
// and what the server sends (FeedServer), which may be fed from two
// goroutines. The zero value is not usable; make one with [New].
type Stream struct {
	mu     sync.Mutex
	p      Policy
	client half
	server half
	err    error // the first refusal: every later call returns it
	seen   bool  // the Connect Initial went by
	info   bool  // the Client Info PDU went by

	// What the server's Connect Response and Attach User Confirm
	// assigned: the channels a client may join.
	ids      []uint16 // one per entry of Channels, in order
	io, user uint16
	msg      uint16 // the message channel, if the server has one
	clipID   uint16 // cliprdr's id, when it is filtered (0: not)
	clip     [2]clipState

	// PasswordBlanked says the Client Info PDU carried a password, which
	// the filter overwrote (Policy.NLA).
	PasswordBlanked bool

	// Channels are the static channels the client asked for, in order,
	// and Blocked those of them the filter renamed.
	Channels, Blocked []string

	// OnBlock, if set, is told of every clipboard transfer the filter
	// stopped (called with the Stream locked: it must not feed it).
	OnBlock func(Block)
}

// half is one direction's framing state.
type half struct {
	server  bool
	buf     []byte // bytes of an incomplete frame
	scratch []byte // a replacement frame
	mcsAt   int    // the server's: where in the last out its MCS traffic began (-1: not yet)
}

// New returns a Stream enforcing p.
func New(p Policy) *Stream { return &Stream{p: p, server: half{server: true}} }

// ConnectInitialSeen reports whether the client's Connect Initial went by.
func (s *Stream) ConnectInitialSeen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// Feed takes the next bytes the client sent and returns those to pass on
// to the server now: every complete frame in order, the Connect Initial
// rewritten. An incomplete frame is held until the rest arrives. out may
// alias in or the Stream's buffer and is valid until the next call. An
// error means the stream must be closed.
func (s *Stream) Feed(in []byte) (out []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.feed(&s.client, in)
}

// FeedServer is Feed for the bytes the server sends to the client.
func (s *Stream) FeedServer(in []byte) (out []byte, err error) {
	out, _, err = s.FeedServerMCS(in)
	return out, err
}

// FeedServerMCS is FeedServer that also says where in out the server's
// MCS traffic (its Connect Response and all after it) begins: 0 when it
// began in an earlier call, -1 when it has not begun. What comes before
// is the security set-up (CredSSP, the Early User Authorization Result),
// which a recording leaves out.
func (s *Stream) FeedServerMCS(in []byte) (out []byte, mcsAt int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err = s.feed(&s.server, in)
	return out, s.server.mcsAt, err
}

func (s *Stream) feed(h *half, in []byte) (out []byte, err error) {
	if s.err != nil {
		return nil, s.err
	}
	b := in
	if len(h.buf) > 0 {
		h.buf = append(h.buf, in...)
		b = h.buf
	}
	n, w := 0, 0 // read and write positions: frames dropped or shortened move the rest down
	h.mcsAt = -1
	if s.ids != nil {
		h.mcsAt = 0
	}
	for n < len(b) {
		l, err := s.frameLen(h, b[n:])
		if err != nil {
			s.err = err
			return nil, err
		}
		if l == 0 || n+l > len(b) {
			break // incomplete
		}
		keep, err := s.inspect(h, b[n:n+l])
		if err != nil {
			s.err = err
			return nil, err
		}
		if len(keep) > 0 && (w != n || &keep[0] != &b[n]) {
			copy(b[w:], keep) // never longer than the frame it replaces
		}
		if h.server && h.mcsAt < 0 && s.ids != nil {
			h.mcsAt = w // this frame was the Connect Response
		}
		w += len(keep)
		n += l
	}
	out = b[:w]
	rest := b[n:]
	if len(rest) > 0 {
		if len(h.buf) > 0 {
			// b is h.buf: keep the tail at its start, after out is used.
			held := append([]byte(nil), rest...)
			out = append([]byte(nil), out...)
			h.buf = held
		} else {
			h.buf = append(h.buf[:0], rest...)
		}
	} else {
		if len(h.buf) > 0 {
			out = append([]byte(nil), out...)
		}
		h.buf = h.buf[:0]
	}
	return out, nil
}

// frameLen returns the length of the frame b starts with, or 0 when b
// does not yet hold enough to tell.
func (s *Stream) frameLen(h *half, b []byte) (int, error) {
	if h.server {
		return s.serverFrameLen(b)
	}
	switch {
	case b[0] == 0x03:
		return tpktLen(b)
	case b[0] == 0x30 && !s.seen: // CredSSP TSRequest (DER), before MCS only
		return derLen(b)
	case b[0]&0x03 == 0 && s.seen: // fast-path input
		return fastPathLen(b)
	}
	if s.seen {
		return 0, fmt.Errorf("rdpfilter: not an RDP frame (first byte %#02x)", b[0])
	}
	return 0, fmt.Errorf("rdpfilter: not a CredSSP or MCS message before the Connect Initial (first byte %#02x)", b[0])
}

// tpktLen is the length of the TPKT b starts with (0: not known yet).
func tpktLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	l := int(binary.BigEndian.Uint16(b[2:4]))
	if b[1] != 0 || l < 7 {
		return 0, fmt.Errorf("rdpfilter: bad TPKT header % x", b[:4])
	}
	return l, nil
}

// derLen is the length of the DER TLV (a CredSSP TSRequest) b starts with.
func derLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	l := int(b[1])
	if l < 0x80 {
		return 2 + l, nil
	}
	k := l & 0x7f
	if k == 0 || k > 3 {
		return 0, fmt.Errorf("rdpfilter: bad DER length form %#02x", b[1])
	}
	if len(b) < 2+k {
		return 0, nil
	}
	l = 0
	for _, c := range b[2 : 2+k] {
		l = l<<8 | int(c)
	}
	if 2+k+l > maxDER {
		return 0, fmt.Errorf("rdpfilter: CredSSP message of %d bytes", 2+k+l)
	}
	return 2 + k + l, nil
}

// fastPathLen is the length of the fast-path PDU b starts with (input
// and output share the header's length encoding).
func fastPathLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	if b[1]&0x80 == 0 {
		if b[1] < 2 {
			return 0, fmt.Errorf("rdpfilter: fast-path length %d", b[1])
		}
		return int(b[1]), nil
	}
	if len(b) < 3 {
		return 0, nil
	}
	l := int(b[1]&0x7f)<<8 | int(b[2])
	if l < 3 {
		return 0, fmt.Errorf("rdpfilter: fast-path length %d", l)
	}
	return l, nil
}

// inspect looks at one complete frame and returns what to pass on in
// its place: f itself (a Connect Initial rewritten in place), a shorter
// replacement, or nothing.
func (s *Stream) inspect(h *half, f []byte) ([]byte, error) {
	if f[0] != 0x03 {
		return f, nil
	}
	// X.224 Data TPDU: LI 2, code 0xF0, EOT. Anything else in a TPKT
	// after the Connection Request/Confirm exchange (which is over before
	// TLS) has no business here.
	if len(f) < 7 || f[4] != 2 || f[5] != 0xF0 {
		return nil, fmt.Errorf("rdpfilter: TPKT holding no X.224 Data TPDU")
	}
	if h.server {
		return s.inspectServer(h, f)
	}
	return s.inspectClient(h, f)
}

// inspectClient looks at one of the client's TPKT frames.
func (s *Stream) inspectClient(h *half, f []byte) ([]byte, error) {
	mcs := f[7:]
	isCI := len(mcs) >= 2 && mcs[0] == 0x7F && mcs[1] == 0x65
	switch {
	case isCI && s.seen:
		return nil, errors.New("rdpfilter: a second MCS Connect Initial")
	case isCI:
		if err := s.connectInitial(mcs); err != nil {
			return nil, err
		}
		s.seen = true
		return f, nil
	case !s.seen:
		return nil, errors.New("rdpfilter: MCS traffic before the Connect Initial")
	case len(mcs) >= 5 && mcs[0]>>2 == mcsJoinRequest:
		return f, s.join(binary.BigEndian.Uint16(mcs[3:]))
	case len(mcs) >= 1 && mcs[0]>>2 == mcsJoinRequest:
		return nil, errors.New("rdpfilter: Channel Join Request truncated")
	}
	if !s.info && (s.p.Xrdp || s.p.NLA || s.oneWay()) {
		s.clientInfo(mcs)
	}
	if s.clipID != 0 {
		return s.channelData(h, f, mcsSendDataRequest, dirIn)
	}
	return f, nil
}

// clientInfo sets INFO_AUTOLOGON in the Client Info PDU, if mcs is one:
// an MCS Send Data Request whose security header says SEC_INFO_PKT.
func (s *Stream) clientInfo(mcs []byte) {
	// Send Data Request: choice byte, initiator (2), channel (2),
	// priority and segmentation (1), a PER length, the data.
	if len(mcs) < 8 || mcs[0]>>2 != 25 {
		return
	}
	data := mcs[6:]
	if _, err := perLen(&data); err != nil || len(data) < 4+8 {
		return
	}
	if binary.LittleEndian.Uint16(data)&0x0040 == 0 { // SEC_INFO_PKT
		return
	}
	s.info = true
	info := data[4:]   // TS_INFO_PACKET, after the security header
	flags := info[4:8] // CodePage, then flags
	v := binary.LittleEndian.Uint32(flags)
	if s.p.Xrdp {
		v |= 0x0008 // INFO_AUTOLOGON
	}
	if s.oneWay() {
		// No bulk compression (INFO_COMPRESSION and its type): the
		// server then compresses no channel data either, which the
		// clipboard filter could not read.
		v &^= 0x0080 | 0x1E00
	}
	binary.LittleEndian.PutUint32(flags, v)
	if s.p.NLA && len(info) >= 18 {
		// CodePage, flags, then the lengths of Domain, UserName and
		// Password (in bytes, without their terminators of 2 bytes
		// under INFO_UNICODE, 1 without), then the strings from byte
		// 18 on. The password keeps its length: zeros, in place.
		term := 1
		if v&0x0010 != 0 { // INFO_UNICODE
			term = 2
		}
		cbDomain := int(binary.LittleEndian.Uint16(info[8:10]))
		cbUser := int(binary.LittleEndian.Uint16(info[10:12]))
		cbPassword := int(binary.LittleEndian.Uint16(info[12:14]))
		at := 18 + cbDomain + term + cbUser + term
		if at+cbPassword <= len(info) {
			clear(info[at : at+cbPassword])
			s.PasswordBlanked = cbPassword > 0
		}
	}
}

var (
	errShort = errors.New("rdpfilter: Connect Initial truncated")
	// The T.124 header of a GCC Conference Create Request: its object
	// identifier, and then, after a PER length, the fixed fields up to
	// the H.221 key "Duca".
	gccPrefix = []byte{0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01}
	gccCCR    = []byte{0x00, 0x08, 0x00, 0x10, 0x00, 0x01, 0xC0, 0x00, 'D', 'u', 'c', 'a'}
)

// The types of the client core and network data blocks.
const (
	csCore = 0xC001
	csNet  = 0xC003
)

// at24 lowers a client core data block's colour depth to at most 24 bits:
// highColorDepth, the 32-bit flag of supportedColorDepths and the
// "want a 32-bit session" early capability, where the block has them.
func at24(b []byte) {
	if len(b) >= 138 && binary.LittleEndian.Uint16(b[136:]) > 24 {
		binary.LittleEndian.PutUint16(b[136:], 24)
	}
	if len(b) >= 140 {
		binary.LittleEndian.PutUint16(b[138:], binary.LittleEndian.Uint16(b[138:])&^0x0008)
	}
	if len(b) >= 142 {
		binary.LittleEndian.PutUint16(b[140:], binary.LittleEndian.Uint16(b[140:])&^0x0002)
	}
}

// connectInitial reads an MCS Connect-Initial (BER) down to the client's
// data blocks and renames the blocked channels in every CS_NET block.
// Every BER length on the way must match the bytes exactly, and the data
// blocks must fill userData to its end.
func (s *Stream) connectInitial(b []byte) error {
	body, rest, err := berTLV(b, 2) // [APPLICATION 101], two tag bytes
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("rdpfilter: %d bytes after the Connect Initial", len(rest))
	}
	// callingDomainSelector, calledDomainSelector (OCTET STRING),
	// upwardFlag (BOOLEAN), target/minimum/maximum parameters (SEQUENCE).
	for _, tag := range []byte{0x04, 0x04, 0x01, 0x30, 0x30, 0x30} {
		if len(body) == 0 || body[0] != tag {
			return fmt.Errorf("rdpfilter: Connect Initial: want tag %#02x", tag)
		}
		if _, body, err = berTLV(body, 1); err != nil {
			return err
		}
	}
	if len(body) == 0 || body[0] != 0x04 {
		return errors.New("rdpfilter: Connect Initial: no userData")
	}
	ud, rest, err := berTLV(body, 1)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("rdpfilter: Connect Initial: bytes after userData")
	}
	if len(ud) < len(gccPrefix) || string(ud[:len(gccPrefix)]) != string(gccPrefix) {
		return errors.New("rdpfilter: userData is not a T.124 Conference Create Request")
	}
	ud = ud[len(gccPrefix):]
	// The PER lengths of the ConnectPDU and of the client data are not
	// trusted: clients get them wrong (IronRDP's ConnectPDU length is two
	// short) and servers read the blocks to the end of userData. So does
	// the filter, which thus sees every block the server will.
	if _, err := perLen(&ud); err != nil {
		return err
	}
	if len(ud) < len(gccCCR) || string(ud[:len(gccCCR)]) != string(gccCCR) {
		return errors.New("rdpfilter: not a Conference Create Request with client data")
	}
	ud = ud[len(gccCCR):]
	if _, err := perLen(&ud); err != nil {
		return err
	}
	nets := 0
	for len(ud) > 0 {
		if len(ud) < 4 {
			return errShort
		}
		typ, l := binary.LittleEndian.Uint16(ud), int(binary.LittleEndian.Uint16(ud[2:]))
		if l < 4 || l > len(ud) {
			return fmt.Errorf("rdpfilter: client data block %#04x of length %d", typ, l)
		}
		switch {
		case typ == csNet:
			// One channel list: with two, the server may number the
			// channels of the one the filter does not take, and each
			// channel id would be checked as another channel's.
			if nets++; nets > 1 {
				return errors.New("rdpfilter: a second network (channel list) block")
			}
			if err := s.network(ud[4:l]); err != nil {
				return err
			}
		case typ == csCore && s.p.Xrdp:
			at24(ud[4:l])
		}
		ud = ud[l:]
	}
	return nil
}

// network renames the blocked channels of one CS_NET block's body.
func (s *Stream) network(b []byte) error {
	if len(b) < 4 {
		return errShort
	}
	count := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if count > 31 || count*12 > len(b) {
		return fmt.Errorf("rdpfilter: %d channels in %d bytes", count, len(b))
	}
	for i := range count {
		name := b[i*12 : i*12+8]
		str := string(name)
		if j := strings.IndexByte(str, 0); j >= 0 {
			str = str[:j]
		}
		s.Channels = append(s.Channels, str)
		if s.p.blocked(str) {
			s.Blocked = append(s.Blocked, str)
			clear(name)
			copy(name, BlockedName)
		}
	}
	return nil
}

// berTLV splits a BER TLV with a tag of tagLen bytes at the start of b
// into its value and what follows. Only definite lengths of at most two
// bytes (all an MCS PDU has) are read.
func berTLV(b []byte, tagLen int) (val, rest []byte, err error) {
	if len(b) < tagLen+1 {
		return nil, nil, errShort
	}
	b = b[tagLen:]
	l := int(b[0])
	b = b[1:]
	switch {
	case l == 0x81:
		if len(b) < 1 {
			return nil, nil, errShort
		}
		l, b = int(b[0]), b[1:]
	case l == 0x82:
		if len(b) < 2 {
			return nil, nil, errShort
		}
		l, b = int(binary.BigEndian.Uint16(b)), b[2:]
	case l >= 0x80:
		return nil, nil, fmt.Errorf("rdpfilter: BER length form %#02x", l)
	}
	if l > len(b) {
		return nil, nil, errShort
	}
	return b[:l], b[l:], nil
}

// perLen reads a PER length determinant (one byte, or two for up to
// 16383), advancing *b.
func perLen(b *[]byte) (int, error) {
	p := *b
	if len(p) < 1 {
		return 0, errShort
	}
	if p[0]&0x80 == 0 {
		*b = p[1:]
		return int(p[0]), nil
	}
	if p[0]&0xC0 != 0x80 || len(p) < 2 {
		return 0, errors.New("rdpfilter: PER length not in one or two bytes")
	}
	*b = p[2:]
	return int(p[0]&0x3F)<<8 | int(p[1]), nil
}
