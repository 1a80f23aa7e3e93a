package egress

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.0.0/16":              "10.1.0.0/16 ",
		"192.0.2.7":                "192.0.2.7/32 ",
		"192.0.2.7:443":            "192.0.2.7/32 TCP 443-0",
		"10.0.0.0/8:8000-8100/tcp": "10.0.0.0/8 TCP 8000-8100",
		"10.0.0.0/8:53/udp":        "10.0.0.0/8 UDP 53-0",
		"[2001:db8::]/32:53/udp":   "2001:db8::/32 UDP 53-0",
		"[2001:db8::1]:443":        "2001:db8::1/128 TCP 443-0",
		"[2001:db8::1]":            "2001:db8::1/128 ",
		"[2001:db8::]/32":          "2001:db8::/32 ",
		"192.0.2.0/24:9000/sctp":   "192.0.2.0/24 SCTP 9000-0",
	} {
		r, err := Parse(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		got := r.CIDR + " "
		if r.Port != 0 {
			got += r.Protocol + " " + strconv.Itoa(int(r.Port)) + "-" + strconv.Itoa(int(r.EndPort))
		}
		if got != want {
			t.Errorf("%s: got %q want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "example.org", "10.0.0.1/8", "10.0.0.0/8:", "10.0.0.0/8:0", "10.0.0.0/8:65536",
		"10.0.0.0/8:443/icmp", "10.0.0.0/8:90-80", "2001:db8::1", "[2001:db8::1", "[2001:db8::1]x", "10.0.0.0/8:+1",
		"10.0.0.0/8:080", "fe80::1%eth0", "[fe80::1%eth0]"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.HasPrefix(err.Error(), "egress ") {
			t.Errorf("%q: error %q does not name the entry", bad, err)
		}
	}
}

// FuzzParse: any entry is refused with an error or becomes one valid
// peer whose ports are in range.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.1.0.0/16", "192.0.2.7:443", "10.0.0.0/8:8000-8100/tcp", "[2001:db8::]/32:53/udp", "[::1]:1", "x:y/z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if _, err := netip.ParsePrefix(r.CIDR); err != nil {
			t.Fatalf("%q: CIDR %q: %v", s, r.CIDR, err)
		}
		if r.Port < 0 || r.Port > 65535 || r.Port == 0 && (r.EndPort != 0 || r.Protocol != "") {
			t.Fatalf("%q: %+v", s, r)
		}
		if r.EndPort != 0 && (r.EndPort < r.Port || r.EndPort > 65535) {
			t.Fatalf("%q: end port %d", s, r.EndPort)
		}
		// What it prints reads back as itself.
		again, err := Parse(r.String())
		if err != nil || again != r {
			t.Fatalf("%q: %+v prints as %q, read back as %+v, %v", s, r, r.String(), again, err)
		}
	})
}
