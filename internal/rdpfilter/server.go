package rdpfilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// MCS DomainMCSPDU choices (T.125), the top six bits of a PER-encoded
// PDU's first byte.
const (
	mcsAttachUserConfirm  = 11
	mcsJoinRequest        = 14
	mcsSendDataRequest    = 25
	mcsSendDataIndication = 26
)

// The types of the server's data blocks in its Connect Response.
const (
	scNet     = 0x0C03
	scMsgChan = 0x0C04
)

// serverFrameLen frames the server's stream: CredSSP (DER) and the
// four-byte Early User Authorization Result before the Connect Response,
// TPKT throughout, fast-path output after it.
func (s *Stream) serverFrameLen(b []byte) (int, error) {
	mcs := s.ids != nil
	switch {
	case b[0] == 0x03:
		return tpktLen(b)
	case b[0] == 0x30 && !mcs:
		return derLen(b)
	case (b[0] == 0x00 || b[0] == 0x05) && !mcs:
		// Early User Authorization Result (HYBRID_EX): a little-endian
		// AUTHZ_SUCCESS (0) or ACCESS_DENIED (5).
		if len(b) < 4 {
			return 0, nil
		}
		return 4, nil
	case b[0]&0x03 == 0 && mcs:
		return fastPathLen(b)
	}
	return 0, fmt.Errorf("rdpfilter: not an RDP frame from the server (first byte %#02x)", b[0])
}

// inspectServer looks at one of the server's TPKT frames: the Connect
// Response for the channel ids, the Attach User Confirm for the user's
// channel, and cliprdr data when it is filtered.
func (s *Stream) inspectServer(h *half, f []byte) ([]byte, error) {
	mcs := f[7:]
	isCR := len(mcs) >= 2 && mcs[0] == 0x7F && mcs[1] == 0x66
	switch {
	case isCR && s.ids != nil:
		return nil, errors.New("rdpfilter: a second MCS Connect Response")
	case isCR && !s.seen:
		return nil, errors.New("rdpfilter: a Connect Response to no Connect Initial")
	case isCR:
		return f, s.connectResponse(mcs)
	case s.ids == nil:
		return nil, errors.New("rdpfilter: MCS traffic from the server before its Connect Response")
	case len(mcs) >= 1 && mcs[0]>>2 == mcsAttachUserConfirm:
		// Choice (initiator present), result, initiator - 1001.
		if len(mcs) >= 4 && mcs[0]&0x02 != 0 && mcs[1] == 0 {
			s.user = 1001 + binary.BigEndian.Uint16(mcs[2:])
		}
	case s.clipID != 0:
		return s.channelData(h, f, mcsSendDataIndication, dirOut)
	}
	return f, nil
}

// connectResponse reads the channel ids from an MCS Connect-Response
// (BER, with a GCC Conference Create Response in its userData): the
// I/O channel, one id per channel the client asked for, and the message
// channel where the server has one.
func (s *Stream) connectResponse(b []byte) error {
	body, rest, err := berTLV(b, 2) // [APPLICATION 102]
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("rdpfilter: %d bytes after the Connect Response", len(rest))
	}
	// result (ENUMERATED), calledConnectId (INTEGER), domainParameters.
	for _, tag := range []byte{0x0A, 0x02, 0x30} {
		if len(body) == 0 || body[0] != tag {
			return fmt.Errorf("rdpfilter: Connect Response: want tag %#02x", tag)
		}
		if _, body, err = berTLV(body, 1); err != nil {
			return err
		}
	}
	if len(body) == 0 || body[0] != 0x04 {
		return errors.New("rdpfilter: Connect Response: no userData")
	}
	ud, _, err := berTLV(body, 1)
	if err != nil {
		return err
	}
	// The server data follow the H.221 key "McDn" and a PER length, and
	// fill userData to its end (as in the Connect Initial, the length is
	// not trusted).
	i := bytes.Index(ud, []byte("McDn"))
	if i < 0 {
		return errors.New("rdpfilter: Connect Response: no server data")
	}
	ud = ud[i+4:]
	if _, err := perLen(&ud); err != nil {
		return err
	}
	var ids []uint16
	for len(ud) > 0 {
		if len(ud) < 4 {
			return errShort
		}
		typ, l := binary.LittleEndian.Uint16(ud), int(binary.LittleEndian.Uint16(ud[2:]))
		if l < 4 || l > len(ud) {
			return fmt.Errorf("rdpfilter: server data block %#04x of length %d", typ, l)
		}
		blk := ud[4:l]
		switch typ {
		case scNet:
			if len(blk) < 4 {
				return errShort
			}
			s.io = binary.LittleEndian.Uint16(blk)
			n := int(binary.LittleEndian.Uint16(blk[2:]))
			if 4+2*n > len(blk) {
				return fmt.Errorf("rdpfilter: %d channel ids in %d bytes", n, len(blk)-4)
			}
			ids = make([]uint16, n)
			for k := range n {
				ids[k] = binary.LittleEndian.Uint16(blk[4+2*k:])
			}
		case scMsgChan:
			if len(blk) >= 2 {
				s.msg = binary.LittleEndian.Uint16(blk)
			}
		}
		ud = ud[l:]
	}
	if ids == nil {
		return errors.New("rdpfilter: Connect Response without server network data")
	}
	if len(ids) != len(s.Channels) {
		return fmt.Errorf("rdpfilter: the server assigned %d channel ids to %d channels", len(ids), len(s.Channels))
	}
	s.ids = ids
	if s.oneWay() {
		for k, name := range s.Channels {
			if strings.EqualFold(name, "cliprdr") {
				s.clipID = ids[k]
			}
		}
	}
	return nil
}

// join checks a client's Channel Join Request: only the channels the
// server assigned (the I/O channel, the user's own, the message channel,
// one per static channel asked for, blocked ones being inert by name) may
// be joined.
func (s *Stream) join(id uint16) error {
	if s.ids == nil {
		return errors.New("rdpfilter: Channel Join Request before the server's Connect Response")
	}
	if id != 0 && (id == s.io || id == s.user || id == s.msg) {
		return nil
	}
	for _, c := range s.ids {
		if c == id && c != 0 {
			return nil
		}
	}
	return fmt.Errorf("rdpfilter: Channel Join Request for channel %d, which the server did not assign", id)
}
