package connector

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// rw is an in-memory peer: it reads from r and records what it is sent.
type rw struct {
	io.Reader
	sent bytes.Buffer
}

func (p *rw) Write(b []byte) (int, error) { return p.sent.Write(b) }

// FuzzRelayHandshake: whatever a client sends, relayHandshake never panics,
// and the server is sent only a well-formed ProtocolVersion and, for 3.7
// and 3.8, a security type it offered, byte for byte as the client sent
// them; bytes the client refused for never reach it.
func FuzzRelayHandshake(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x01"), true)
	f.Add([]byte("RFB 003.008\n\x02"), true)
	f.Add([]byte("RFB 003.003\n"), true)
	f.Add([]byte("RFB 003.007\n\x01rest"), false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), true)
	f.Add([]byte("RFB 004.000\n\x01"), false)
	f.Add([]byte("RFB 003.00"), true)
	f.Fuzz(func(t *testing.T, in []byte, v38 bool) {
		greeting, offered := "RFB 003.008\n", []byte{secNone, secVNCAuth}
		if !v38 {
			greeting = "RFB 003.007\n"
		}
		client := &rw{Reader: bytes.NewReader(in)}
		server := &rw{Reader: bytes.NewReader(append([]byte(greeting), append([]byte{byte(len(offered))}, offered...)...))}
		err := relayHandshake(client, server)
		sent := server.sent.Bytes()
		if err != nil && !errors.Is(err, errClientHandshake) {
			t.Fatalf("%q: error %v is not the client's", in, err)
		}
		if len(sent) == 0 {
			if err == nil {
				t.Fatalf("%q accepted, but nothing reached the server", in)
			}
			return
		}
		if len(sent) < 12 || !bytes.Equal(sent, in[:len(sent)]) {
			t.Fatalf("%q: server got %q, not a prefix of what the client sent", in, sent)
		}
		v, perr := parseVersion(sent[:12])
		if perr != nil {
			t.Fatalf("%q: server got a ProtocolVersion the parser refuses: %v", in, perr)
		}
		switch {
		case v == rfb33:
			if len(sent) != 12 {
				t.Fatalf("%q: 3.3, but the server got %q", in, sent)
			}
		case len(sent) == 13:
			if !slices.Contains(offered, sent[12]) {
				t.Fatalf("%q: server got security type %d, not offered", in, sent[12])
			}
			if err != nil {
				t.Fatalf("%q: the choice reached the server, but %v", in, err)
			}
		case len(sent) == 12:
			if err == nil {
				t.Fatalf("%q: accepted with no security type sent", in)
			}
		default:
			t.Fatalf("%q: server got %q", in, sent)
		}
	})
}
