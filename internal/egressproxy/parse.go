package egressproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Limits on a request: a browser's CONNECT is one short line and a few
// headers.
const (
	maxLine    = 1024
	maxHeaders = 32
)

// ErrMethod is wrapped by ReadConnect's error for a request that is not a
// CONNECT.
var ErrMethod = errors.New("only CONNECT is served")

// ReadConnect reads one HTTP/1.x CONNECT request (the request line and
// headers, whose values are ignored) from br, which must have a buffer of
// at least maxLine bytes, and returns its target in canonical form:
// names in lower case without a trailing dot, IP addresses as netip
// prints them.
func ReadConnect(br *bufio.Reader) (host string, port int, err error) {
	line, err := readLine(br)
	if err != nil {
		return "", 0, fmt.Errorf("request line: %w", err)
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return "", 0, errors.New("request line: want METHOD TARGET HTTP/1.x")
	}
	if method != "CONNECT" {
		return "", 0, fmt.Errorf("method %q: %w", truncate(method), ErrMethod)
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return "", 0, fmt.Errorf("protocol %q: want HTTP/1.1 or HTTP/1.0", truncate(proto))
	}
	if host, port, err = SplitTarget(target); err != nil {
		return "", 0, fmt.Errorf("target %q: %w", truncate(target), err)
	}
	for i := 0; ; i++ {
		h, err := readLine(br)
		if err != nil {
			return "", 0, fmt.Errorf("header: %w", err)
		}
		if h == "" {
			return host, port, nil
		}
		if i == maxHeaders {
			return "", 0, fmt.Errorf("more than %d headers", maxHeaders)
		}
		name, _, ok := strings.Cut(h, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return "", 0, fmt.Errorf("header %q: want NAME: VALUE", truncate(h))
		}
	}
}

// readLine reads one line ending in LF (CRLF or a bare LF), without it.
// Control characters other than tab refuse the request: they have no
// place in a CONNECT and are how request smuggling starts.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxLine {
		return "", fmt.Errorf("longer than %d bytes", maxLine)
	}
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(b[:len(b)-1], []byte("\r"))
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return "", errors.New("control character")
		}
	}
	return string(b), nil
}

// SplitTarget parses HOST:PORT as an allow-list entry or a CONNECT target
// names it: a DNS name (letters, digits and hyphens in dot-separated labels,
// the last not all digits, at most 253 bytes) or an IP literal, bracketed
// for IPv6, and a decimal port 1-65535.
func SplitTarget(s string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, errors.New("want HOST:PORT")
	}
	if p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return "", 0, fmt.Errorf("port %q: want 1-65535", truncate(p))
	}
	port, _ = strconv.Atoi(p)
	if port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1-65535", p)
	}
	if strings.Contains(h, ":") || strings.HasPrefix(s, "[") {
		// SplitHostPort took the brackets off: only IPv6 may wear them.
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, fmt.Errorf("host %q: not an IPv6 address", truncate(h))
		}
		return a.String(), port, nil
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String(), port, nil
	}
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	if err := checkName(name); err != nil {
		return "", 0, fmt.Errorf("host %q: %w", truncate(h), err)
	}
	return name, port, nil
}

func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("want a DNS name of 1-253 bytes")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not a DNS name")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("not a DNS name")
			}
		}
	}
	// "127.1" or "0x7f.1" are what some resolvers read as IPv4: no name
	// that could be one.
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return errors.New("looks like an IPv4 address in a non-standard form")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
