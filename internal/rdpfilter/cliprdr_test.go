package rdpfilter

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// The server's side and the clipboard channel, with PDUs built field by
// field from MS-RDPBCGR and MS-RDPECLIP, independently of the parser.

func tpkt(mcs []byte) []byte {
	x := slices.Concat([]byte{0x02, 0xF0, 0x80}, mcs)
	return slices.Concat([]byte{0x03, 0x00}, binary.BigEndian.AppendUint16(nil, uint16(4+len(x))), x)
}

func ber(tag []byte, v []byte) []byte {
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

// connectResponse is a server's MCS Connect Response assigning io as the
// I/O channel and ids to the client's channels (MS-RDPBCGR 4.1.4).
func connectResponse(io uint16, ids ...uint16) []byte {
	le16 := func(v int) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(v)) }
	core := slices.Concat(le16(0x0C01), le16(12), []byte{0x04, 0x00, 0x08, 0x00, 0x03, 0, 0, 0})
	sec := slices.Concat(le16(0x0C02), le16(12), make([]byte, 8))
	netb := slices.Concat(le16(int(io)), le16(len(ids)))
	for _, id := range ids {
		netb = append(netb, le16(int(id))...)
	}
	if len(ids)%2 == 1 {
		netb = append(netb, 0, 0)
	}
	netb = slices.Concat(le16(0x0C03), le16(4+len(netb)), netb)
	data := slices.Concat(core, sec, netb)
	gcc := slices.Concat([]byte{0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01, 0x2A, 0x14, 0x76, 0x0A, 0x01, 0x01, 0x00, 0x01, 0xC0, 0x00},
		[]byte("McDn"), []byte{0x80 | byte(len(data)>>8), byte(len(data))}, data)
	params := ber([]byte{0x30}, slices.Concat(ber([]byte{0x02}, []byte{0x22}), ber([]byte{0x02}, []byte{0x03})))
	cr := ber([]byte{0x7F, 0x66}, slices.Concat(ber([]byte{0x0A}, []byte{0}), ber([]byte{0x02}, []byte{0}), params, ber([]byte{0x04}, gcc)))
	return tpkt(cr)
}

// attachUserConfirm gives the client user channel user.
func attachUserConfirm(user uint16) []byte {
	return tpkt([]byte{0x2E, 0x00, byte((user - 1001) >> 8), byte(user - 1001)})
}

func joinRequest(user, channel uint16) []byte {
	return tpkt([]byte{0x38, byte((user - 1001) >> 8), byte(user - 1001), byte(channel >> 8), byte(channel)})
}

// sendData is an MCS Send Data Request (client) or Indication (server)
// on channel with one chunk of a channel PDU of total bytes.
func sendData(server bool, channel uint16, total int, flags uint32, chunk []byte) []byte {
	choice := byte(0x64)
	if server {
		choice = 0x68
	}
	data := slices.Concat(binary.LittleEndian.AppendUint32(nil, uint32(total)), binary.LittleEndian.AppendUint32(nil, flags), chunk)
	var per []byte
	if len(data) < 0x80 {
		per = []byte{byte(len(data))}
	} else {
		per = []byte{0x80 | byte(len(data)>>8), byte(len(data))}
	}
	return tpkt(slices.Concat([]byte{choice, 0x00, 0x06, byte(channel >> 8), byte(channel), 0x70}, per, data))
}

// clipPDU is a CLIPRDR_HEADER and its data.
func clipPDU(typ, flags uint16, data []byte) []byte {
	h := binary.LittleEndian.AppendUint16(nil, typ)
	h = binary.LittleEndian.AppendUint16(h, flags)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(data)))
	return append(h, data...)
}

// frames sends pdu on channel in chunks of at most size bytes.
func chunks(server bool, channel uint16, pdu []byte, size int) []byte {
	var out []byte
	for i := 0; i < len(pdu); i += size {
		var f uint32
		if i == 0 {
			f |= chanFirst
		}
		if i+size >= len(pdu) {
			f |= chanLast
		}
		out = append(out, sendData(server, channel, len(pdu), f, pdu[i:min(i+size, len(pdu))])...)
	}
	return out
}

const (
	ioChan   = 1003
	userChan = 1007
	clipChan = 1005
)

// opened is a Stream through the MCS connection sequence with channels
// rdpsnd, cliprdr, rdpdr (ids 1004, 1005, 1006).
func opened(t testing.TB, p Policy) (*Stream, *[]Block) {
	t.Helper()
	s := New(p)
	var blocks []Block
	s.OnBlock = func(b Block) { blocks = append(blocks, b) }
	steps := []struct {
		server bool
		b      []byte
	}{
		{false, connectInitial("rdpsnd", "cliprdr", "rdpdr")},
		{true, connectResponse(ioChan, 1004, clipChan, 1006)},
		{true, attachUserConfirm(userChan)},
		{false, joinRequest(userChan, userChan)},
		{false, joinRequest(userChan, ioChan)},
		{false, joinRequest(userChan, 1004)},
		{false, joinRequest(userChan, clipChan)},
		{false, joinRequest(userChan, 1006)},
	}
	for i, st := range steps {
		feed := s.Feed
		if st.server {
			feed = s.FeedServer
		}
		out, err := feed(slices.Clone(st.b))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if len(out) != len(st.b) {
			t.Fatalf("step %d: passed %d bytes of %d", i, len(out), len(st.b))
		}
	}
	return s, &blocks
}

// readClip reads back the cliprdr PDUs out of filtered frames (whole
// chunks, in order) on clipChan.
func readClip(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var pdus [][]byte
	var cur []byte
	for len(b) > 0 {
		l := int(binary.BigEndian.Uint16(b[2:]))
		f := b[:l]
		b = b[l:]
		mcs := f[7:]
		if binary.BigEndian.Uint16(mcs[3:]) != clipChan {
			continue
		}
		d := mcs[6:]
		if _, err := perLen(&d); err != nil {
			t.Fatal(err)
		}
		flags := binary.LittleEndian.Uint32(d[4:])
		if flags&chanFirst != 0 {
			cur = nil
		}
		cur = append(cur, d[8:]...)
		if flags&chanLast != 0 {
			if int(binary.LittleEndian.Uint32(d)) != len(cur) {
				t.Fatalf("PDU of %d bytes declared %d", len(cur), binary.LittleEndian.Uint32(d))
			}
			pdus = append(pdus, cur)
		}
	}
	return pdus
}

// formatList is a Format List with long format names announcing
// CF_UNICODETEXT and a named format.
func formatList() []byte {
	name := []byte{}
	for _, r := range "SECRET-NAME" {
		name = append(name, byte(r), 0)
	}
	return clipPDU(cbFormatList, 0, slices.Concat([]byte{13, 0, 0, 0, 0, 0}, []byte{0x01, 0xC0, 0, 0}, name, []byte{0, 0}))
}

// TestClipboardOneWay: in the refused direction no Format List names a
// format and no data response carries data, however the PDU is chunked;
// in the allowed direction every PDU passes byte for byte.
func TestClipboardOneWay(t *testing.T) {
	secret := bytes.Repeat([]byte("TOP-SECRET-TEXT "), 300) // 4800 bytes: several chunks
	data := clipPDU(cbFormatDataResponse, 0x0001, secret)
	files := clipPDU(cbFileContentsResp, 0x0001, slices.Concat([]byte{7, 0, 0, 0}, secret))
	for _, p := range []Policy{{ClipIn: true}, {ClipOut: true}} {
		for _, size := range []int{1600, 12, 13, 5000} {
			for _, server := range []bool{false, true} {
				dir := map[bool]string{false: "in", true: "out"}[server]
				refused := (server && !p.ClipOut) || (!server && !p.ClipIn)
				s, blocks := opened(t, p)
				feed := s.Feed
				if server {
					feed = s.FeedServer
				}
				var in []byte
				pdus := [][]byte{clipPDU(cbClipCaps, 0, []byte{1, 0, 0, 0, 1, 0, 12, 0, 2, 0, 0, 0, 0x1E, 0, 0, 0}),
					formatList(), clipPDU(cbFormatDataRequest, 0, []byte{13, 0, 0, 0}), data, files,
					clipPDU(cbTempDirectory, 0, make([]byte, 520))}
				for _, pdu := range pdus {
					in = append(in, chunks(server, clipChan, pdu, size)...)
					// Other channels' traffic in between passes.
					in = append(in, sendData(server, ioChan, 12, chanFirst|chanLast, []byte("TOP-SECRET-T"))...)
				}
				var out []byte
				for i := 0; i < len(in); i += 777 { // cut across frames
					o, err := feed(slices.Clone(in[i:min(i+777, len(in))]))
					if err != nil {
						t.Fatalf("%+v %s chunks of %d: %v", p, dir, size, err)
					}
					out = append(out, o...)
				}
				got := readClip(t, out)
				if !refused {
					if !bytes.Equal(out, in) || len(*blocks) != 0 {
						t.Errorf("%+v: allowed direction %s changed (%d blocks)", p, dir, len(*blocks))
					}
					continue
				}
				want := [][]byte{pdus[0], clipPDU(cbFormatList, 0, nil), pdus[2],
					clipPDU(cbFormatDataResponse, cbResponseFail, nil), clipPDU(cbFileContentsResp, cbResponseFail, []byte{7, 0, 0, 0})}
				if len(got) != len(want) {
					t.Fatalf("%+v %s chunks of %d: %d PDUs passed, want %d: % x", p, dir, size, len(got), len(want), got)
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Errorf("%+v %s chunks of %d: PDU %d is % x, want % x", p, dir, size, i, got[i], want[i])
					}
				}
				if n := bytes.Count(out, []byte("TOP-SECRET-T")); n != len(pdus) || bytes.Contains(out, []byte("S\x00E\x00C\x00R\x00E\x00T")) {
					t.Errorf("%+v %s: secret text in %d frames, want only the %d on the I/O channel", p, dir, n, len(pdus))
				}
				whats := []string{}
				for _, b := range *blocks {
					if b.Direction != dir {
						t.Errorf("block %+v in direction %s", b, dir)
					}
					whats = append(whats, b.What)
				}
				if strings.Join(whats, ",") != "format list,data,file contents,temporary directory" {
					t.Errorf("blocks reported: %v", whats)
				}
			}
		}
	}
}

// TestClipboardFailsClosed: what the filter cannot check ends the
// connection.
func TestClipboardFailsClosed(t *testing.T) {
	fl := formatList()
	for name, c := range map[string]struct {
		server bool
		b      []byte
	}{
		"compressed chunk":       {false, sendData(false, clipChan, len(fl), chanFirst|chanLast|chanCompressed, fl)},
		"compressed from server": {true, sendData(true, clipChan, len(fl), chanFirst|chanLast|chanCompressed, fl)},
		"header split":           {false, chunks(false, clipChan, fl, 4)},
		"chunk outside a PDU":    {false, sendData(false, clipChan, len(fl), chanLast, fl)},
		"PDU inside a PDU":       {false, slices.Concat(sendData(false, clipChan, 2*len(fl), chanFirst, fl), sendData(false, clipChan, len(fl), chanFirst|chanLast, fl))},
		"longer than declared":   {false, sendData(false, clipChan, len(fl)-1, chanFirst|chanLast, fl)},
		"shorter than declared":  {false, sendData(false, clipChan, len(fl)+1, chanFirst|chanLast, fl)},
		"huge PDU":               {false, sendData(false, clipChan, maxClipPDU+1, chanFirst, fl)},
		"Send Data length":       {false, func() []byte { b := sendData(false, clipChan, len(fl), chanFirst|chanLast, fl); b[13]++; return b }()},
	} {
		s, _ := opened(t, Policy{ClipOut: true})
		feed := s.Feed
		if c.server {
			s, _ = opened(t, Policy{ClipIn: true})
			feed = s.FeedServer
		}
		if _, err := feed(c.b); err == nil {
			t.Errorf("%s: accepted", name)
		} else if _, err := s.Feed(joinRequest(userChan, ioChan)); err == nil {
			t.Errorf("%s: the stream went on after its refusal", name)
		}
	}
}

// TestJoinRefused: a client joining a channel the server did not assign
// it, or before the server assigned any, is refused, and so is a second
// Connect Initial after the MCS connection (an attacker's client, not an
// honest one, sends these).
func TestJoinRefused(t *testing.T) {
	for _, id := range []uint16{1008, 1002, 0, 0xFFFF} {
		s, _ := opened(t, Policy{})
		if _, err := s.Feed(joinRequest(userChan, id)); err == nil || !strings.Contains(err.Error(), "did not assign") {
			t.Errorf("join of %d: %v", id, err)
		}
	}
	s := New(Policy{})
	if _, err := s.Feed(slices.Concat(connectInitial("cliprdr"), joinRequest(userChan, ioChan))); err == nil {
		t.Error("a join before the Connect Response passed")
	}
	s, _ = opened(t, Policy{})
	if _, err := s.Feed(connectInitial("cliprdr")); err == nil {
		t.Error("a second Connect Initial passed")
	}
	s, _ = opened(t, Policy{})
	if _, err := s.FeedServer(connectResponse(ioChan, 1004, 1005, 1006)); err == nil {
		t.Error("a second Connect Response passed")
	}
	s = New(Policy{})
	s.Feed(connectInitial("cliprdr"))
	if _, err := s.FeedServer(connectResponse(ioChan, 1004, 1005)); err == nil {
		t.Error("a Connect Response with ids for two of one channel passed")
	}
}

// TestClientInfoNoCompression: with a one-way clipboard the Client Info
// PDU asks for no compression.
func TestClientInfoNoCompression(t *testing.T) {
	body := slices.Concat([]byte{0x40, 0x00, 0x00, 0x00}, []byte{0, 0, 0, 0}, []byte{0x81, 0x1E, 0, 0}, make([]byte, 18))
	info := tpkt(slices.Concat([]byte{0x64, 0x00, 0x06, 0x03, 0xEB, 0x70, byte(len(body))}, body))
	for _, p := range []Policy{{ClipIn: true}, {ClipIn: true, ClipOut: true}} {
		s, _ := opened(t, p)
		out, err := s.Feed(slices.Clone(info))
		if err != nil {
			t.Fatal(err)
		}
		flags := binary.LittleEndian.Uint32(out[len(out)-22:])
		if compressed := flags&0x1E80 != 0; compressed == s.oneWay() {
			t.Errorf("%+v: info flags %#x", p, flags)
		}
	}
}

// FuzzServer: hostile server bytes (and client bytes between them) never
// panic the filter nor grow the stream.
func FuzzServer(f *testing.F) {
	f.Add(slices.Concat(connectResponse(ioChan, 1004, clipChan, 1006), attachUserConfirm(userChan),
		chunks(true, clipChan, formatList(), 20)), 7)
	f.Add(slices.Concat([]byte{0x30, 0x03, 0x02, 0x01, 0x06, 0, 0, 0, 0}, connectResponse(ioChan, 1004, clipChan, 1006), []byte{0x00, 0x05, 0x80, 0x01, 0x00}), 3)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		step = max(1, step%64+1)
		s := New(Policy{ClipIn: true})
		if _, err := s.Feed(connectInitial("rdpsnd", "cliprdr", "rdpdr")); err != nil {
			t.Fatal(err)
		}
		n := 0
		for i := 0; i < len(in); i += step {
			o, err := s.FeedServer(slices.Clone(in[i:min(i+step, len(in))]))
			if err != nil {
				return
			}
			n += len(o)
		}
		if n > len(in) {
			t.Fatalf("passed on %d bytes of %d", n, len(in))
		}
	})
}

// FuzzClipboard: hostile cliprdr chunks from a client, after an honest
// connection sequence, never panic the filter, never grow the stream, and
// nothing passed on names a format or carries data a Format List or data
// response held.
func FuzzClipboard(f *testing.F) {
	f.Add(chunks(false, clipChan, formatList(), 9), 5)
	f.Add(chunks(false, clipChan, clipPDU(cbFormatDataResponse, 1, []byte("hello world")), 9), 64)
	f.Fuzz(func(t *testing.T, in []byte, step int) {
		step = max(1, step%64+1)
		s, _ := opened(t, Policy{ClipOut: true})
		var out []byte
		for i := 0; i < len(in); i += step {
			o, err := s.Feed(slices.Clone(in[i:min(i+step, len(in))]))
			if err != nil {
				break
			}
			out = append(out, o...)
		}
		if len(out) > len(in) {
			t.Fatalf("passed on %d bytes of %d", len(out), len(in))
		}
		// Whatever passed on the clipboard channel frames again, and
		// every Format List in it is empty, every data response failed.
		again, _ := opened(t, Policy{ClipIn: true, ClipOut: true})
		if _, err := again.Feed(slices.Clone(out)); err != nil {
			t.Fatalf("output does not frame again: %v", err)
		}
		for len(out) > 0 {
			l, err := again.frameLen(&again.client, out)
			if err != nil || l == 0 {
				t.Fatalf("output frames no more: %v", err)
			}
			fr := out[:l]
			out = out[l:]
			if fr[0] != 0x03 || len(fr) < 13 {
				continue
			}
			mcs := fr[7:]
			if mcs[0]>>2 != mcsSendDataRequest || binary.BigEndian.Uint16(mcs[3:]) != clipChan {
				continue
			}
			d := mcs[6:]
			perLen(&d)
			if binary.LittleEndian.Uint32(d[4:])&chanFirst == 0 || len(d) < 16 {
				continue
			}
			typ, flags, n := binary.LittleEndian.Uint16(d[8:]), binary.LittleEndian.Uint16(d[10:]), binary.LittleEndian.Uint32(d[12:])
			if (typ == cbFormatList && n != 0) || (typ == cbFormatDataResponse && (n != 0 || flags != cbResponseFail)) {
				t.Fatalf("passed: % x", d)
			}
		}
	})
}

// BenchmarkServerBulk is the filter on the server's bulk traffic: fast-
// path output updates of 8 KiB, read 16 KiB at a time as the relay does.
func BenchmarkServerBulk(b *testing.B) {
	for _, p := range []Policy{{}, {ClipOut: true}} {
		b.Run(map[bool]string{false: "none", true: "out"}[p.ClipOut], func(b *testing.B) {
			s, _ := opened(b, p)
			fp := make([]byte, 8192)
			fp[0], fp[1], fp[2] = 0x00, 0x80|byte(len(fp)>>8), byte(len(fp))
			var stream []byte
			for range 64 {
				stream = append(stream, fp...)
				stream = append(stream, sendData(true, ioChan, 100, chanFirst|chanLast, make([]byte, 100))...)
			}
			buf := make([]byte, 16<<10)
			b.SetBytes(int64(len(stream)))
			b.ResetTimer()
			for range b.N {
				for i := 0; i < len(stream); i += len(buf) {
					n := copy(buf, stream[i:])
					if _, err := s.FeedServer(buf[:n]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// TestServerBeforeMCS: what a server sends before its Connect Response
// under NLA (CredSSP TSRequests, DER, and the four-byte Early User
// Authorization Result of HYBRID_EX) passes byte for byte, cut anywhere;
// MCS or fast-path output before the Connect Response does not.
func TestServerBeforeMCS(t *testing.T) {
	ts := ber([]byte{0x30}, bytes.Repeat([]byte{0x42}, 300)) // a TSRequest's framing (two-byte length)
	in := slices.Concat(ts, ts, []byte{0, 0, 0, 0}, connectResponse(ioChan, 1004, clipChan, 1006), attachUserConfirm(userChan),
		[]byte{0x00, 0x80, 0x05, 1, 2}) // a fast-path update, after MCS
	for step := 1; step < len(in); step += 7 {
		s := New(Policy{ClipIn: true})
		if _, err := s.Feed(connectInitial("rdpsnd", "cliprdr", "rdpdr")); err != nil {
			t.Fatal(err)
		}
		var out []byte
		for i := 0; i < len(in); i += step {
			o, err := s.FeedServer(slices.Clone(in[i:min(i+step, len(in))]))
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			out = append(out, o...)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("step %d: the stream changed", step)
		}
		if s.user != userChan || s.clipID != clipChan || s.io != ioChan {
			t.Fatalf("ids: user %d, cliprdr %d, I/O %d", s.user, s.clipID, s.io)
		}
	}
	for name, b := range map[string][]byte{
		"fast-path before MCS":    {0x04, 0x80, 0x05, 1, 2, 3},
		"MCS before the response": attachUserConfirm(userChan),
		"garbage":                 []byte("HTTP/1.1 200 OK\r\n"),
		"response to no initial":  connectResponse(ioChan),
	} {
		s := New(Policy{})
		if name != "response to no initial" {
			s.Feed(connectInitial("cliprdr"))
		}
		if _, err := s.FeedServer(slices.Clone(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestFeedServerMCS: the server's stream is marked where its MCS traffic
// begins (what an RDP recording keeps), after CredSSP and the Early User
// Authorization Result, whether they come in one piece with the Connect
// Response or apart, and at 0 for every piece after.
func TestFeedServerMCS(t *testing.T) {
	credssp := []byte{0x30, 0x03, 0x02, 0x01, 0x06}
	early := []byte{0, 0, 0, 0}
	cr := connectResponse(ioChan, 1004)
	all := slices.Concat(credssp, early, cr, attachUserConfirm(userChan))
	for _, step := range []int{1, 3, 5, 9, len(all)} {
		s := New(Policy{NLA: true})
		if _, err := s.Feed(connectInitial("cliprdr")); err != nil {
			t.Fatal(err)
		}
		var pre, post []byte
		for i := 0; i < len(all); i += step {
			out, at, err := s.FeedServerMCS(slices.Clone(all[i:min(i+step, len(all))]))
			if err != nil {
				t.Fatal(err)
			}
			if at < 0 {
				pre = append(pre, out...)
				continue
			}
			if len(post) > 0 && at != 0 {
				t.Fatalf("step %d: mark at %d after MCS began", step, at)
			}
			pre = append(pre, out[:at]...)
			post = append(post, out[at:]...)
		}
		if !bytes.Equal(pre, slices.Concat(credssp, early)) || !bytes.Equal(post, all[len(credssp)+len(early):]) {
			t.Fatalf("step %d: before %x, from MCS %x", step, pre, post)
		}
	}
}
