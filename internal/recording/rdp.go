package recording

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Kinds of recording (Meta.Kind).
const (
	KindVNC = "vnc"
	KindRDP = "rdp"
)

// RDPMagic starts the header block of an RDP recording.
const RDPMagic = "AIRLOCK-RDP 1\n"

// RDPHeader is what a replay needs to stand in for the RDP server before
// its recorded bytes: the server's answers from before the recording
// began, which the browser's client (IronRDP) is sent in the RDCleanPath
// response. None of it is secret: the Connection Confirm is a few bytes
// of negotiation, the chain is the server's public certificates, and the
// channel names are what the client asked for (the replay's client must
// ask for as many, in the same order, for the recorded channel ids to
// match).
type RDPHeader struct {
	// Confirm is the server's X.224 Connection Confirm, as it came.
	Confirm []byte `json:"x224_confirm"`
	// Certificates is the server's TLS chain (DER), leaf first.
	Certificates [][]byte `json:"certificates"`
	// Channels are the static channels the client asked for, in order,
	// before the gateway's channel filter renamed any.
	Channels []string `json:"channels"`
}

// Limits of a header a reader accepts: far more than any server sends.
const (
	maxHeaderConfirm = 64
	maxHeaderCerts   = 16
	maxHeaderCert    = 64 << 10
	maxHeaderChans   = 31 // MS-RDPBCGR: at most 31 static channels
	maxHeaderName    = 8
)

// Marshal encodes h as an RDP recording's header block:
//
//	magic     RDPMagic
//	confirm   uint16 length, bytes
//	certs     uint16 count, then each: uint32 length, DER
//	channels  uint16 count, then each: uint8 length, name
//
// all integers big-endian.
func (h RDPHeader) Marshal() ([]byte, error) {
	if len(h.Confirm) > maxHeaderConfirm || len(h.Certificates) > maxHeaderCerts || len(h.Channels) > maxHeaderChans {
		return nil, errors.New("rdp header: too many or too long fields")
	}
	b := []byte(RDPMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Confirm)))
	b = append(b, h.Confirm...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Certificates)))
	for _, c := range h.Certificates {
		if len(c) > maxHeaderCert {
			return nil, fmt.Errorf("rdp header: certificate of %d bytes", len(c))
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Channels)))
	for _, n := range h.Channels {
		if len(n) > maxHeaderName {
			return nil, fmt.Errorf("rdp header: channel name %q", n)
		}
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b, nil
}

// ParseRDPHeader reads a header block (Marshal). The file may have been
// replaced by anyone who could write the state directory, so every length
// is checked against the limits and what is left.
func ParseRDPHeader(b []byte) (RDPHeader, error) {
	var h RDPHeader
	rest, ok := bytes.CutPrefix(b, []byte(RDPMagic))
	if !ok {
		return h, errors.New("rdp header: no magic")
	}
	take := func(n int) ([]byte, error) {
		if n > len(rest) {
			return nil, fmt.Errorf("rdp header: %d bytes wanted, %d left", n, len(rest))
		}
		v := rest[:n]
		rest = rest[n:]
		return v, nil
	}
	u16 := func() (int, error) {
		v, err := take(2)
		if err != nil {
			return 0, err
		}
		return int(binary.BigEndian.Uint16(v)), nil
	}
	n, err := u16()
	if err != nil {
		return h, err
	}
	if n > maxHeaderConfirm {
		return h, fmt.Errorf("rdp header: confirm of %d bytes", n)
	}
	if h.Confirm, err = take(n); err != nil {
		return h, err
	}
	if n, err = u16(); err != nil {
		return h, err
	}
	if n > maxHeaderCerts {
		return h, fmt.Errorf("rdp header: %d certificates", n)
	}
	for range n {
		l, err := take(4)
		if err != nil {
			return h, err
		}
		cl := binary.BigEndian.Uint32(l)
		if cl > maxHeaderCert {
			return h, fmt.Errorf("rdp header: certificate of %d bytes", cl)
		}
		c, err := take(int(cl))
		if err != nil {
			return h, err
		}
		h.Certificates = append(h.Certificates, c)
	}
	if n, err = u16(); err != nil {
		return h, err
	}
	if n > maxHeaderChans {
		return h, fmt.Errorf("rdp header: %d channels", n)
	}
	for range n {
		l, err := take(1)
		if err != nil {
			return h, err
		}
		if int(l[0]) > maxHeaderName {
			return h, fmt.Errorf("rdp header: channel name of %d bytes", l[0])
		}
		name, err := take(int(l[0]))
		if err != nil {
			return h, err
		}
		h.Channels = append(h.Channels, string(name))
	}
	if len(rest) != 0 {
		return h, fmt.Errorf("rdp header: %d bytes after it", len(rest))
	}
	return h, nil
}

// BeginRDP starts an RDP recording's data: h goes in the sidecar and, as
// the first block, in the file, so that a recording cut short (no
// sidecar) can be replayed too. Call it once, before the first Write.
func (w *Writer) BeginRDP(h RDPHeader) error {
	b, err := h.Marshal()
	if err != nil {
		w.Stop("unparseable")
		return err
	}
	w.mu.Lock()
	w.meta.RDP = &h
	w.mu.Unlock()
	w.Write(b)
	return nil
}

// SplitRDP takes an RDP recording's blocks apart: its header (the first
// block) and the server's bytes after it.
func SplitRDP(blocks []Block) (RDPHeader, []Block, error) {
	if len(blocks) == 0 {
		return RDPHeader{}, nil, errors.New("rdp recording: no header block (the connection ended before the server's first MCS PDU)")
	}
	h, err := ParseRDPHeader(blocks[0].Data)
	if err != nil {
		return h, nil, err
	}
	return h, blocks[1:], nil
}

// maxHeaderBlock bounds the header block PeekRDP reads.
const maxHeaderBlock = 2 + maxHeaderConfirm + 2 + maxHeaderCerts*(4+maxHeaderCert) + 2 + maxHeaderChans*(1+maxHeaderName) + len(RDPMagic)

// PeekRDP reads the start of an uncompressed recording stream and returns
// its RDP header, if it is an RDP recording (for one without a sidecar:
// being written, or cut short). It reads no further than the header.
func PeekRDP(r io.Reader) (RDPHeader, bool) {
	var head [len(Magic) + 4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || string(head[:len(Magic)]) != Magic {
		return RDPHeader{}, false
	}
	n := binary.BigEndian.Uint32(head[len(Magic):])
	if n < uint32(len(RDPMagic)) || n > uint32(maxHeaderBlock) {
		return RDPHeader{}, false
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return RDPHeader{}, false
	}
	h, err := ParseRDPHeader(b)
	return h, err == nil
}
