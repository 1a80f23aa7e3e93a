// Package egress reads the Kubernetes backend's egress entries. It imports
// nothing of Kubernetes, so the configuration checks them without linking
// client-go.
package egress

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one place a session's pod may connect to: a network, and a port
// or port range (Port 0: any port of any protocol).
type Rule struct {
	CIDR string
	// Protocol is TCP, UDP or SCTP when Port is set.
	Protocol string
	// Port, and EndPort for a range (0: just Port).
	Port, EndPort int32
}

// Parse reads one egress entry: a CIDR or an address, optionally
// with a port or port range and a protocol ("10.1.0.0/16",
// "192.0.2.7:443", "10.0.0.0/8:8000-8100/tcp", "[2001:db8::]/32:53/udp").
// A port is required with a protocol.
func Parse(s string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("egress %q: %s; want CIDR[:PORT[-PORT][/tcp|/udp|/sctp]]", s, why)
	}
	addr, ports := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("no ] after the IPv6 address")
		}
		addr = s[1:end]
		rest := s[end+1:]
		if strings.HasPrefix(rest, "/") { // [v6]/len[:port]
			l, p, _ := strings.Cut(rest[1:], ":")
			addr += "/" + l
			ports = p
			if strings.Contains(rest[1:], ":") && p == "" {
				return bad("empty port")
			}
		} else if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok || p == "" {
				return bad("junk after ]")
			}
			ports = p
		}
	} else if a, p, ok := strings.Cut(s, ":"); ok {
		if strings.Count(s, ":") > 1 {
			return bad("an IPv6 address needs [brackets]")
		}
		if p == "" {
			return bad("empty port")
		}
		addr, ports = a, p
	}
	var cidr string
	if pfx, err := netip.ParsePrefix(addr); err == nil {
		if pfx.Masked() != pfx {
			return bad(fmt.Sprintf("host bits set (the network is %s)", pfx.Masked()))
		}
		cidr = pfx.String()
	} else if a, err := netip.ParseAddr(addr); err == nil && a.Zone() == "" {
		cidr = netip.PrefixFrom(a, a.BitLen()).String()
	} else {
		return bad(fmt.Sprintf("%q is not an address or CIDR", addr))
	}
	rule := Rule{CIDR: cidr}
	if ports == "" {
		return rule, nil
	}
	proto := "TCP"
	if p, pr, ok := strings.Cut(ports, "/"); ok {
		switch pr {
		case "tcp":
		case "udp":
			proto = "UDP"
		case "sctp":
			proto = "SCTP"
		default:
			return bad(fmt.Sprintf("protocol %q", pr))
		}
		ports = p
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err := portNumber(lo)
	if err != nil {
		return bad(err.Error())
	}
	rule.Protocol, rule.Port = proto, first
	if isRange {
		last, err := portNumber(hi)
		if err != nil {
			return bad(err.Error())
		}
		if last < first {
			return bad(fmt.Sprintf("range %d-%d ends before it starts", first, last))
		}
		rule.EndPort = last
	}
	return rule, nil
}

func portNumber(s string) (int32, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("port %q: want 1 to 65535", s)
	}
	return int32(n), nil
}

// String is the rule as an egress entry.
func (r Rule) String() string {
	s := r.CIDR
	if strings.Contains(s, ":") {
		addr, bits, _ := strings.Cut(s, "/")
		s = "[" + addr + "]/" + bits
	}
	if r.Port == 0 {
		return s
	}
	s += ":" + strconv.Itoa(int(r.Port))
	if r.EndPort != 0 {
		s += "-" + strconv.Itoa(int(r.EndPort))
	}
	return s + "/" + strings.ToLower(r.Protocol)
}
