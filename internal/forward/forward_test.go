package forward

import (
	"net"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, ok := range []string{"unix:/run/x.sock", "127.0.0.1:8888", "[::1]:80", "localhost:1"} {
		if _, err := ParseTarget(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"unix:rel.sock", "10.0.0.1:80", "example.org:80", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:08", "127.0.0.1", ""} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseTarget: what ParseTarget accepts is a UNIX socket path or a
// loopback address, never another host.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"unix:/a", "127.0.0.1:80", "[::1]:1", "localhost:2", "10.0.0.1:80", "127.0.0.1:0x50"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTarget(s)
		if err != nil {
			return
		}
		if strings.HasPrefix(got, "unix:/") {
			return
		}
		host, _, err := net.SplitHostPort(got)
		if err != nil {
			t.Fatalf("%q accepted, not host:port", s)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("%q accepted: not loopback", s)
		}
	})
}
