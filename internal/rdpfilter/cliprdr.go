package rdpfilter

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The clipboard channel (MS-RDPECLIP) with one direction refused.
//
// A cliprdr PDU travels in chunks, each in its own MCS Send Data frame
// behind a CHANNEL_PDU_HEADER (the PDU's whole length, and flags marking
// the first and the last chunk). The filter reads the CLIPRDR_HEADER at
// the start of each PDU's first chunk and decides for the whole PDU: pass
// it, drop it, or pass one short PDU of its own in place of the first
// chunk and drop the others. So it holds no PDU, whatever its size: the
// bound on a PDU's length only keeps the chunk accounting honest.
//
// On the side whose clipboard must not cross (the server's with
// clipboard in, the client's with out):
//   - a Format List becomes an empty one, so the other side never asks
//     for data (nor learns format names, which are free text);
//   - a Format Data Response becomes a failed one with no data, and so
//     does a File Contents Response (keeping its stream id);
//   - the client's Temporary Directory and any PDU type this filter does
//     not know are dropped;
//   - capabilities, Monitor Ready, Format List Response, data requests
//     and lock/unlock pass: they carry no clipboard content.
//
// A compressed chunk cannot be read, so it ends the connection (the
// filter also takes compression out of the Client Info PDU, so an honest
// server never sends one).

// Direction of a clipboard transfer: in is client to server.
const (
	dirIn  = 0
	dirOut = 1
)

// Block is one clipboard transfer the filter stopped.
type Block struct {
	// Direction is "in" (browser to session) or "out" (session to
	// browser).
	Direction string
	// What was stopped: "format list", "data", "file contents",
	// "temporary directory" or "unknown PDU".
	What string
	// Bytes is the length of the PDU that was stopped.
	Bytes int
}

// maxClipPDU bounds the length a cliprdr PDU may declare.
const maxClipPDU = 64 << 20

// CHANNEL_PDU_HEADER flags.
const (
	chanFirst      = 0x00000001
	chanLast       = 0x00000002
	chanShowProto  = 0x00000010
	chanCompressed = 0x00200000
)

// MS-RDPECLIP message types.
const (
	cbMonitorReady        = 0x0001
	cbFormatList          = 0x0002
	cbFormatListResponse  = 0x0003
	cbFormatDataRequest   = 0x0004
	cbFormatDataResponse  = 0x0005
	cbTempDirectory       = 0x0006
	cbClipCaps            = 0x0007
	cbFileContentsRequest = 0x0008
	cbFileContentsResp    = 0x0009
	cbLockClipdata        = 0x000A
	cbUnlockClipdata      = 0x000B

	cbResponseFail = 0x0002
)

// clipState is one direction's place in the chunks of a cliprdr PDU.
type clipState struct {
	inPDU bool // a first chunk went by, the last not yet
	drop  bool // the rest of this PDU's chunks are dropped
	left  int  // bytes of the PDU still to come
}

// oneWay reports whether the clipboard is open one way only.
func (s *Stream) oneWay() bool { return s.p.ClipIn != s.p.ClipOut }

// refused reports whether clipboard content may not go in direction dir.
func (s *Stream) refused(dir int) bool {
	if dir == dirIn {
		return !s.p.ClipIn
	}
	return !s.p.ClipOut
}

// channelData looks at an MCS Send Data Request (the client's) or
// Indication (the server's), choice, and filters it when it is on the
// clipboard channel.
func (s *Stream) channelData(h *half, f []byte, choice byte, dir int) ([]byte, error) {
	mcs := f[7:]
	if len(mcs) < 1 || mcs[0]>>2 != choice {
		return f, nil
	}
	if len(mcs) < 6 {
		return nil, errors.New("rdpfilter: MCS Send Data truncated")
	}
	if binary.BigEndian.Uint16(mcs[3:]) != s.clipID {
		return f, nil
	}
	data := mcs[6:]
	l, err := perLen(&data)
	if err != nil {
		return nil, err
	}
	if l != len(data) {
		return nil, fmt.Errorf("rdpfilter: Send Data of %d bytes in a frame with %d", l, len(data))
	}
	return s.clipChunk(h, f, data, dir)
}

// clipChunk takes one chunk of cliprdr data, data (CHANNEL_PDU_HEADER and
// what follows), inside frame f.
func (s *Stream) clipChunk(h *half, f, data []byte, dir int) ([]byte, error) {
	if len(data) < 8 {
		return nil, errors.New("rdpfilter: clipboard chunk without its channel header")
	}
	total, flags := int(binary.LittleEndian.Uint32(data)), binary.LittleEndian.Uint32(data[4:])
	chunk := data[8:]
	if flags&chanCompressed != 0 {
		return nil, errors.New("rdpfilter: compressed clipboard data (refused: it cannot be checked)")
	}
	st := &s.clip[dir]
	if flags&chanFirst != 0 {
		if st.inPDU {
			return nil, errors.New("rdpfilter: clipboard PDU begun inside another")
		}
		if total < 8 || total > maxClipPDU {
			return nil, fmt.Errorf("rdpfilter: clipboard PDU of %d bytes", total)
		}
		*st = clipState{inPDU: true, left: total}
	} else if !st.inPDU {
		return nil, errors.New("rdpfilter: clipboard chunk outside a PDU")
	}
	st.left -= len(chunk)
	last := flags&chanLast != 0
	switch {
	case st.left < 0:
		return nil, errors.New("rdpfilter: clipboard chunks longer than their PDU")
	case last && st.left != 0:
		return nil, errors.New("rdpfilter: clipboard PDU ended short")
	case !last && st.left == 0:
		return nil, errors.New("rdpfilter: clipboard PDU not ended at its length")
	}
	if last {
		st.inPDU = false
	}
	if flags&chanFirst == 0 {
		if st.drop {
			return nil, nil
		}
		return f, nil
	}
	st.drop = false
	if !s.refused(dir) {
		return f, nil
	}
	if len(chunk) < 8 {
		return nil, errors.New("rdpfilter: clipboard PDU header split across chunks")
	}
	typ := binary.LittleEndian.Uint16(chunk)
	var repl []byte
	what := ""
	switch typ {
	case cbMonitorReady, cbFormatListResponse, cbFormatDataRequest, cbClipCaps,
		cbFileContentsRequest, cbLockClipdata, cbUnlockClipdata:
		return f, nil
	case cbFormatList:
		repl = binary.LittleEndian.AppendUint16(make([]byte, 0, 8), cbFormatList)
		repl = append(repl, 0, 0, 0, 0, 0, 0)
		if total > 8 {
			what = "format list"
		}
	case cbFormatDataResponse:
		repl = []byte{cbFormatDataResponse, 0, cbResponseFail, 0, 0, 0, 0, 0}
		what = "data"
	case cbFileContentsResp:
		if len(chunk) < 12 {
			return nil, errors.New("rdpfilter: File Contents Response split before its stream id")
		}
		repl = []byte{cbFileContentsResp, 0, cbResponseFail, 0, 4, 0, 0, 0}
		repl = append(repl, chunk[8:12]...)
		what = "file contents"
	case cbTempDirectory:
		what = "temporary directory"
	default:
		what = "unknown PDU"
	}
	if what != "" && s.OnBlock != nil {
		s.OnBlock(Block{Direction: [2]string{"in", "out"}[dir], What: what, Bytes: total})
	}
	if !last {
		st.drop = true
	}
	if repl == nil {
		return nil, nil
	}
	return s.chunkFrame(h, f, repl, flags), nil
}

// chunkFrame builds a frame of one whole cliprdr PDU, pdu, with the MCS
// header of f (the same sender and channel). It is never longer than f,
// whose first chunk held at least a CLIPRDR_HEADER.
func (s *Stream) chunkFrame(h *half, f, pdu []byte, flags uint32) []byte {
	b := h.scratch[:0]
	n := 7 + 6 + 1 + 8 + len(pdu)
	b = append(b, 0x03, 0x00, byte(n>>8), byte(n), 0x02, 0xF0, 0x80)
	b = append(b, f[7:13]...)
	b = append(b, byte(8+len(pdu)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pdu)))
	b = binary.LittleEndian.AppendUint32(b, chanFirst|chanLast|flags&chanShowProto)
	b = append(b, pdu...)
	h.scratch = b
	return b
}
