package rdpfilter

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// connectInitial builds a client's MCS Connect Initial the way RDP
// clients lay it out (MS-RDPBCGR 4.1.3), with a core data block and a
// network data block naming channels. It is built field by field here,
// independently of the parser.
func connectInitial(channels ...string) []byte {
	return connectInitialNets([][]string{channels})
}

// connectInitialNets is connectInitial with a network block for each of
// nets (a client sends one).
func connectInitialNets(nets [][]string) []byte {
	le16 := func(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }
	le32 := func(v int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }
	block := func(typ int, body []byte) []byte {
		return slices.Concat(le16(typ), le16(4+len(body)), body)
	}
	data := block(0xC001, make([]byte, 128))
	for _, channels := range nets {
		net := le32(len(channels))
		for _, c := range channels {
			var name [8]byte
			copy(name[:], c)
			net = slices.Concat(net, name[:], le32(0x80000000))
		}
		data = slices.Concat(data, block(0xC003, net))
	}
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
	params := ber([]byte{0x30}, slices.Concat(
		ber([]byte{0x02}, []byte{0x22}), ber([]byte{0x02}, []byte{0x02}), ber([]byte{0x02}, []byte{0x00}),
		ber([]byte{0x02}, []byte{0x01}), ber([]byte{0x02}, []byte{0x00}), ber([]byte{0x02}, []byte{0x01}),
		ber([]byte{0x02}, []byte{0xFF, 0xFF}), ber([]byte{0x02}, []byte{0x02})))
	ci := ber([]byte{0x7F, 0x65}, slices.Concat(
		ber([]byte{0x04}, []byte{0x01}), ber([]byte{0x04}, []byte{0x01}), ber([]byte{0x01}, []byte{0xFF}),
		params, params, params, ber([]byte{0x04}, gcc)))
	x224 := slices.Concat([]byte{0x02, 0xF0, 0x80}, ci)
	return slices.Concat([]byte{0x03, 0x00}, binary.BigEndian.AppendUint16(nil, uint16(4+len(x224))), x224)
}

// names reads the channel names back out of a Connect Initial that
// connectInitial built (the network block is the last 4+4+12n bytes).
func names(ci []byte, n int) []string {
	var out []string
	b := ci[len(ci)-12*n:]
	for i := range n {
		out = append(out, strings.TrimRight(string(b[i*12:i*12+8]), "\x00"))
	}
	return out
}

func TestConnectInitialRenamesBlocked(t *testing.T) {
	chans := []string{"rdpsnd", "cliprdr", "rdpdr", "drdynvc"}
	for _, tc := range []struct {
		p    Policy
		want []string
	}{
		{Policy{ClipIn: true, ClipOut: true, Drives: true}, chans},
		{Policy{ClipIn: false, ClipOut: false, Drives: true}, []string{"rdpsnd", BlockedName, "rdpdr", "drdynvc"}},
		{Policy{ClipIn: true, ClipOut: true, Drives: false}, []string{"rdpsnd", "cliprdr", BlockedName, "drdynvc"}},
		{Policy{}, []string{"rdpsnd", BlockedName, BlockedName, "drdynvc"}},
	} {
		ci := connectInitial(chans...)
		s := New(tc.p)
		out, err := s.Feed(slices.Clone(ci))
		if err != nil {
			t.Fatalf("%+v: %v", tc.p, err)
		}
		if len(out) != len(ci) {
			t.Fatalf("%+v: %d bytes out of %d", tc.p, len(out), len(ci))
		}
		if got := names(out, len(chans)); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: channels %q, want %q", tc.p, got, tc.want)
		}
		if !slices.Equal(s.Channels, chans) {
			t.Errorf("seen %q", s.Channels)
		}
		// Nothing but the names changed.
		diff := 0
		for i := range ci {
			if ci[i] != out[i] {
				diff++
			}
		}
		if diff > 8*len(s.Blocked) {
			t.Errorf("%d bytes changed for %d channels", diff, len(s.Blocked))
		}
	}
}

// TestCaseAndSplit: a client cannot slip the channel past by its case, by
// splitting the Connect Initial over many reads, or by CredSSP messages
// before it.
func TestCaseAndSplit(t *testing.T) {
	credssp := []byte{0x30, 0x03, 0x02, 0x01, 0x06}
	ci := connectInitial("CLIPRDR", "RdpDr")
	stream := slices.Concat(credssp, ci, []byte{0x00, 0x03, 0x00}) // and a fast-path frame
	for step := 1; step <= len(stream); step += 7 {
		s := New(Policy{})
		var out []byte
		for i := 0; i < len(stream); i += step {
			o, err := s.Feed(slices.Clone(stream[i:min(i+step, len(stream))]))
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			out = append(out, o...)
		}
		if len(out) != len(stream) {
			t.Fatalf("step %d: %d bytes out of %d", step, len(out), len(stream))
		}
		if got := names(out[len(credssp):len(credssp)+len(ci)], 2); !slices.Equal(got, []string{BlockedName, BlockedName}) {
			t.Errorf("step %d: channels %q", step, got)
		}
	}
}

func TestRefuses(t *testing.T) {
	ci := connectInitial("cliprdr")
	trunc := slices.Clone(ci)
	trunc[len(trunc)-20]++ // a client data block length no longer matching
	for name, in := range map[string][]byte{
		"second Connect Initial": slices.Concat(ci, ci),
		"garbage first":          []byte("GET / HTTP/1.1\r\n"),
		"fast-path before MCS":   {0x00, 0x03, 0x00},
		"MCS before CI":          {0x03, 0x00, 0x00, 0x08, 0x02, 0xF0, 0x80, 0x04},
		"not X.224 Data":         {0x03, 0x00, 0x00, 0x0B, 0x06, 0xE0, 0, 0, 0, 0, 0},
		"bad inner length":       bytes.Replace(slices.Clone(ci), []byte("Duca"), []byte("Duck"), 1),
		"channel count":          func() []byte { b := slices.Clone(ci); b[len(b)-16] = 40; return b }(),
		// A second list the server may read instead of the first: the
		// filter would map the server's channel ids to the wrong names
		// (cliprdr's traffic taken for rdpsnd's, its one-way policy not
		// applied), and the two lists together could pass 31 channels.
		"two network blocks": connectInitialNets([][]string{{"rdpsnd", "cliprdr"}, {"cliprdr", "rdpsnd"}}),
	} {
		if _, err := New(Policy{}).Feed(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzFilter: hostile client bytes never panic the filter, never make it
// pass on more bytes than it was given, and whatever it accepted as a
// Connect Initial names no blocked channel any more.
func FuzzFilter(f *testing.F) {
	f.Add(connectInitial("cliprdr", "rdpdr"), 5)
	f.Add(slices.Concat([]byte{0x30, 0x03, 0x02, 0x01, 0x06}, connectInitial("CLIPRDR")), 3)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		// Odd steps with Policy.NLA: the Client Info PDU's password is
		// blanked from lengths the input chooses.
		nla := step%2 != 0
		step = max(1, step%64+1)
		s := New(Policy{NLA: nla})
		var out []byte
		for i := 0; i < len(in); i += step {
			o, err := s.Feed(slices.Clone(in[i:min(i+step, len(in))]))
			if err != nil {
				return
			}
			out = append(out, o...)
		}
		if len(out) > len(in) {
			t.Fatalf("passed on %d bytes of %d", len(out), len(in))
		}
		// Read what was passed on again, allowing everything: it must
		// frame the same way and name no blocked channel.
		again := New(Policy{ClipIn: true, ClipOut: true, Drives: true})
		if _, err := again.Feed(slices.Clone(out)); err != nil {
			t.Fatalf("output does not frame again: %v", err)
		}
		none := Policy{}
		for _, c := range again.Channels {
			if none.blocked(c) {
				t.Fatalf("channel %q passed on", c)
			}
		}
	})
}

// TestXrdpAdaptation: for xrdp the Connect Initial asks for at most 24-bit
// colour and the Client Info PDU for an automatic logon; without the
// policy neither changes.
func TestXrdpAdaptation(t *testing.T) {
	info := func() []byte {
		// TPKT, X.224 Data, Send Data Request (initiator 1007, channel
		// 1003, priority), PER length, SEC_INFO_PKT header, CodePage,
		// flags (INFO_MOUSE), and the rest of a TS_INFO_PACKET.
		body := slices.Concat([]byte{0x40, 0x00, 0x00, 0x00}, []byte{0, 0, 0, 0}, []byte{0x01, 0, 0, 0}, make([]byte, 18))
		mcs := slices.Concat([]byte{0x64, 0x00, 0x06, 0x03, 0xEB, 0x70, byte(len(body))}, body)
		x := slices.Concat([]byte{0x02, 0xF0, 0x80}, mcs)
		return slices.Concat([]byte{0x03, 0x00}, binary.BigEndian.AppendUint16(nil, uint16(4+len(x))), x)
	}
	core := func(ci []byte) []byte {
		// After "Duca", the client data's two-byte PER length, then the
		// core block's header.
		i := bytes.Index(ci, []byte("Duca")) + 4 + 2
		if binary.LittleEndian.Uint16(ci[i:]) != 0xC001 {
			panic("no core block")
		}
		return ci[i+4:]
	}
	for _, xrdp := range []bool{true, false} {
		ci := realtest.RDPConnectInitial(800, 600, "cliprdr")
		in := slices.Concat(ci, info())
		out, err := New(Policy{ClipIn: true, ClipOut: true, Xrdp: xrdp}).Feed(slices.Clone(in))
		if err != nil {
			t.Fatal(err)
		}
		c := core(out[:len(ci)])
		depth, flags := binary.LittleEndian.Uint16(c[136:]), binary.LittleEndian.Uint32(out[len(out)-22:])
		if xrdp && (depth != 24 || binary.LittleEndian.Uint16(c[138:])&0x0008 != 0 || flags&0x0008 == 0) {
			t.Errorf("xrdp: depth %d, supported %#x, info flags %#x", depth, binary.LittleEndian.Uint16(c[138:]), flags)
		}
		if !xrdp && !bytes.Equal(out, in) {
			t.Error("without the xrdp policy the stream changed")
		}
	}
}

// TestNLABlanksInfoPassword: after CredSSP the Client Info PDU's password
// (UTF-16, as IronRDP sends it) leaves the filter as zeros of the same
// length, and everything else in it, the user name included, unchanged;
// without NLA nothing changes. A Client Info PDU whose lengths point past
// its end is left alone, not read out of bounds.
func TestNLABlanksInfoPassword(t *testing.T) {
	u16 := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = append(b, byte(r), 0)
		}
		return b
	}
	info := func(cbPassword uint16) []byte {
		domain, user, pw := u16(""), u16("alice"), u16("Secret2Pass")
		if cbPassword == 0 {
			cbPassword = uint16(len(pw))
		}
		// SEC_INFO_PKT header, CodePage, flags (INFO_MOUSE|INFO_UNICODE),
		// the five lengths, then the strings with their terminators.
		body := slices.Concat([]byte{0x40, 0x00, 0x00, 0x00}, []byte{0, 0, 0, 0}, []byte{0x11, 0, 0, 0},
			binary.LittleEndian.AppendUint16(nil, uint16(len(domain))), binary.LittleEndian.AppendUint16(nil, uint16(len(user))),
			binary.LittleEndian.AppendUint16(nil, cbPassword), []byte{0, 0, 0, 0},
			domain, []byte{0, 0}, user, []byte{0, 0}, pw, []byte{0, 0}, []byte{0, 0, 0, 0})
		mcs := slices.Concat([]byte{0x64, 0x00, 0x06, 0x03, 0xEB, 0x70, byte(len(body))}, body)
		x := slices.Concat([]byte{0x02, 0xF0, 0x80}, mcs)
		return slices.Concat([]byte{0x03, 0x00}, binary.BigEndian.AppendUint16(nil, uint16(4+len(x))), x)
	}
	ci := realtest.RDPConnectInitial(800, 600, "cliprdr")
	for _, nla := range []bool{true, false} {
		in := slices.Concat(ci, info(0))
		f := New(Policy{ClipIn: true, ClipOut: true, NLA: nla})
		if f.Connected() {
			t.Fatal("connected before the Connect Initial")
		}
		out, err := f.Feed(slices.Clone(in))
		if !f.Connected() {
			t.Error("the Connect Initial went by unseen")
		}
		if err != nil {
			t.Fatal(err)
		}
		has := bytes.Contains(out, u16("Secret2Pass"))
		if nla && (has || !f.PasswordBlanked || len(out) != len(in) || !bytes.Contains(out, u16("alice"))) {
			t.Errorf("nla: password left %v, blanked %v, %d bytes of %d", has, f.PasswordBlanked, len(out), len(in))
		}
		if !nla && (!bytes.Equal(out, in) || f.PasswordBlanked) {
			t.Error("without nla the stream changed")
		}
	}
	in := slices.Concat(ci, info(0xFFF0))
	f := New(Policy{ClipIn: true, ClipOut: true, NLA: true})
	if out, err := f.Feed(slices.Clone(in)); err != nil || !bytes.Equal(out, in) || f.PasswordBlanked {
		t.Errorf("lengths past the end: %v, blanked %v", err, f.PasswordBlanked)
	}
}
