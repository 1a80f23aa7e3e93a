package realtest

import (
	"encoding/binary"
	"errors"
	"slices"
)

// The first messages of an RDP client, built field by field from
// MS-RDPBCGR for tests that drive a real RDP server (xrdp) without a
// full client: enough to reach the server's MCS Connect Response.

// RDPConnectionRequest is an X.224 Connection Request with an
// RDP_NEG_REQ asking for the given security protocols (1 TLS, 2 CredSSP).
func RDPConnectionRequest(protocols uint32) []byte {
	cookie := []byte("Cookie: mstshash=airlock\r\n")
	b := []byte{0x03, 0x00, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0}
	b = append(b, cookie...)
	b = append(b, 0x01, 0x00, 0x08, 0x00)
	b = binary.LittleEndian.AppendUint32(b, protocols)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[4] = byte(len(b) - 5)
	return b
}

// RDPConnectInitial is a client's MCS Connect Initial (in its TPKT) for a
// width×height desktop, asking for the static channels named, with the
// TLS protocol selected.
func RDPConnectInitial(width, height int, channels ...string) []byte {
	le16 := func(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }
	le32 := func(v int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }
	block := func(typ int, body []byte) []byte { return slices.Concat(le16(typ), le16(4+len(body)), body) }
	name := make([]byte, 32)
	copy(name, "a\x00i\x00r\x00") // UTF-16LE "air"
	core := slices.Concat(
		le32(0x00080004), le16(width), le16(height), le16(0xCA01), le16(0xAA03),
		le32(0x409), le32(2600), name, le32(4), le32(0), le32(12), make([]byte, 64),
		le16(0xCA01), le16(1), le32(0), le16(24), le16(0x000F), le16(0x0001),
		make([]byte, 64), []byte{0, 0}, le32(1))
	network := le32(len(channels))
	for _, c := range channels {
		var n [8]byte
		copy(n[:], c)
		network = slices.Concat(network, n[:], le32(0x80800000))
	}
	data := slices.Concat(block(0xC001, core), block(0xC002, slices.Concat(le32(0), le32(0))), block(0xC003, network))
	per := func(n int) []byte {
		if n < 0x80 {
			return []byte{byte(n)}
		}
		return []byte{0x80 | byte(n>>8), byte(n)}
	}
	ccr := slices.Concat([]byte{0x00, 0x08, 0x00, 0x10, 0x00, 0x01, 0xC0, 0x00, 'D', 'u', 'c', 'a'}, per(len(data)), data)
	gcc := slices.Concat([]byte{0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01}, per(len(ccr)), ccr)
	ber := func(tag []byte, v []byte) []byte {
		var l []byte
		switch {
		case len(v) < 0x80:
			l = []byte{byte(len(v))}
		case len(v) < 0x100:
			l = []byte{0x81, byte(len(v))}
		default:
			l = []byte{0x82, byte(len(v) >> 8), byte(len(v))}
		}
		return slices.Concat(tag, l, v)
	}
	i := func(v ...byte) []byte { return ber([]byte{0x02}, v) }
	params := func(chans, users, tokens byte, size ...byte) []byte {
		return ber([]byte{0x30}, slices.Concat(i(chans), i(users), i(tokens), i(1), i(0), i(1), i(size...), i(2)))
	}
	ci := ber([]byte{0x7F, 0x65}, slices.Concat(
		ber([]byte{0x04}, []byte{0x01}), ber([]byte{0x04}, []byte{0x01}), ber([]byte{0x01}, []byte{0xFF}),
		params(34, 2, 0, 0x00, 0xFF, 0xFF), params(1, 1, 1, 0x04, 0x20), params(0x7F, 0x7F, 0x7F, 0x00, 0xFF, 0xFF),
		ber([]byte{0x04}, gcc)))
	x224 := slices.Concat([]byte{0x02, 0xF0, 0x80}, ci)
	return slices.Concat([]byte{0x03, 0x00}, binary.BigEndian.AppendUint16(nil, uint16(4+len(x224))), x224)
}

// RDPServerChannelIDs finds the server network data (SC_NET) in an MCS
// Connect Response and returns the channel ids it assigned, one per
// channel the client asked for, in order.
func RDPServerChannelIDs(resp []byte) ([]uint16, error) {
	if len(resp) < 9 || resp[7] != 0x7F || resp[8] != 0x66 {
		return nil, errors.New("not an MCS Connect Response")
	}
	for i := 9; i+8 <= len(resp); i++ {
		if resp[i] != 0x03 || resp[i+1] != 0x0C {
			continue
		}
		l := int(binary.LittleEndian.Uint16(resp[i+2:]))
		n := int(binary.LittleEndian.Uint16(resp[i+6:]))
		want := 8 + 2*n
		if n%2 == 1 {
			want += 2 // padding
		}
		if l != want || i+l > len(resp) {
			continue
		}
		var ids []uint16
		for k := range n {
			ids = append(ids, binary.LittleEndian.Uint16(resp[i+8+2*k:]))
		}
		return ids, nil
	}
	return nil, errors.New("no server network data in the Connect Response")
}

// RDPConnectResponse is a server's MCS Connect Response (MS-RDPBCGR
// 4.1.4) giving io as the I/O channel and ids to the client's channels,
// in order: what a stand-in RDP server answers a Connect Initial with.
func RDPConnectResponse(io uint16, ids ...uint16) []byte {
	le16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	core := append(append(le16(0x0C01), le16(12)...), 0x04, 0x00, 0x08, 0x00, 0x03, 0, 0, 0)
	net := append(le16(io), le16(uint16(len(ids)))...)
	for _, id := range ids {
		net = append(net, le16(id)...)
	}
	if len(ids)%2 == 1 {
		net = append(net, 0, 0)
	}
	net = append(append(le16(0x0C03), le16(uint16(4+len(net)))...), net...)
	data := append(core, net...)
	gcc := append([]byte{0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01, 0x2A, 0x14, 0x76, 0x0A, 0x01, 0x01, 0x00, 0x01, 0xC0, 0x00, 'M', 'c', 'D', 'n',
		0x80 | byte(len(data)>>8), byte(len(data))}, data...)
	ber := func(tag []byte, v []byte) []byte {
		switch {
		case len(v) < 0x80:
			tag = append(tag, byte(len(v)))
		case len(v) < 0x100:
			tag = append(tag, 0x81, byte(len(v)))
		default:
			tag = append(tag, 0x82, byte(len(v)>>8), byte(len(v)))
		}
		return append(tag, v...)
	}
	params := ber([]byte{0x30}, append(ber([]byte{0x02}, []byte{0x22}), ber([]byte{0x02}, []byte{0x03})...))
	body := append(append(ber([]byte{0x0A}, []byte{0}), ber([]byte{0x02}, []byte{0})...), params...)
	cr := ber([]byte{0x7F, 0x66}, append(body, ber([]byte{0x04}, gcc)...))
	x := append([]byte{0x02, 0xF0, 0x80}, cr...)
	return append([]byte{0x03, 0x00, byte((4 + len(x)) >> 8), byte(4 + len(x))}, x...)
}
