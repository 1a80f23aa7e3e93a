// Package header trusts a user name that a reverse proxy in front of
// airlock (Open OnDemand, or any proxy that authenticates users itself)
// puts in a request header, but only on requests that come straight from
// one of the proxy's configured addresses.
//
// The peer address is the TCP peer in http.Request.RemoteAddr and nothing
// else: X-Forwarded-For, Forwarded and X-Real-IP are written by whoever
// sends the request and prove nothing. A request from any other address
// that carries the header is refused with an error for the caller to log:
// it is either a misconfigured proxy list or someone trying to be another
// user. It never sets, strips or forwards headers; the gateway must remove
// the header before proxying a request anywhere else.
package header

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// Method is the name reported in Identity.Method.
const Method = "header"

// DefaultHeader is the header Open OnDemand's and Apache's mod_auth_*
// proxies conventionally set.
const DefaultHeader = "X-Forwarded-User"

// Errors, matchable with errors.Is.
var (
	// ErrUntrusted: the header came from an address not in TrustedProxies.
	ErrUntrusted = errors.New("user header from an untrusted address")
	// ErrBadHeader: the header came from a trusted proxy but is empty,
	// repeated, or not a valid user name.
	ErrBadHeader = errors.New("unusable user header from trusted proxy")
)

// Config configures a [Header].
type Config struct {
	// Header is the request header holding the user name. Default
	// "X-Forwarded-User".
	Header string
	// TrustedProxies are the addresses the proxy connects from. Required;
	// a prefix of length 0 (trusting everyone) is refused. IPv4-mapped
	// IPv6 peers (::ffff:a.b.c.d) match IPv4 prefixes.
	TrustedProxies []netip.Prefix
	// AdminUsers are the user names that are admins. The proxy vouches
	// for who a user is, not for their role, so roles are configured
	// here.
	AdminUsers []string
}

// Header authenticates requests from trusted proxies. It is immutable and
// safe for concurrent use.
type Header struct {
	name    string
	proxies []netip.Prefix
	admins  map[string]bool
}

// New checks cfg and returns a Header.
func New(cfg Config) (*Header, error) {
	h, err := newHeader(cfg)
	if err != nil {
		return nil, fmt.Errorf("header auth config: %w", err)
	}
	return h, nil
}

func newHeader(cfg Config) (*Header, error) {
	name := http.CanonicalHeaderKey(cmp.Or(cfg.Header, DefaultHeader))
	if !validHeaderName(name) {
		return nil, fmt.Errorf("Header %q: not a valid header name", cfg.Header)
	}
	if len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("TrustedProxies: none; name the reverse proxy's addresses")
	}
	h := &Header{name: name, admins: make(map[string]bool)}
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, errors.New("TrustedProxies: an invalid prefix")
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("TrustedProxies: %s trusts every address, so anyone could log in as anyone", p)
		}
		h.proxies = append(h.proxies, p.Masked())
	}
	for _, u := range cfg.AdminUsers {
		if err := auth.ValidateUserName(u); err != nil {
			return nil, fmt.Errorf("AdminUsers %q: %w", u, err)
		}
		h.admins[u] = true
	}
	return h, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// Trusted reports whether r comes straight from a trusted proxy.
func (h *Header) Trusted(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// Not "ip:port": a UNIX socket or a test request; never trusted.
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range h.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// FromRequest returns who r is from, according to the trusted header:
//   - (identity, true, nil) for a request from a trusted proxy carrying
//     exactly one valid user name;
//   - (zero, false, nil) for a request without the header, from anywhere:
//     other methods may authenticate it;
//   - (zero, false, err) for a request with the header from an untrusted
//     address (ErrUntrusted), or from a trusted proxy with an empty,
//     repeated or invalid name (ErrBadHeader). The caller should log err
//     and refuse the request; err never quotes the header's value.
func (h *Header) FromRequest(r *http.Request) (auth.Identity, bool, error) {
	vals, present := r.Header[h.name]
	if !present {
		return auth.Identity{}, false, nil
	}
	if !h.Trusted(r) {
		return auth.Identity{}, false, fmt.Errorf("header %s from %s: %w", h.name, r.RemoteAddr, ErrUntrusted)
	}
	// Two values mean a proxy that appends instead of replacing: one of
	// them may be the client's own.
	if len(vals) != 1 {
		return auth.Identity{}, false, fmt.Errorf("header %s from %s: %d values: %w", h.name, r.RemoteAddr, len(vals), ErrBadHeader)
	}
	if err := auth.ValidateUserName(vals[0]); err != nil {
		return auth.Identity{}, false, fmt.Errorf("header %s from %s: %w: %w", h.name, r.RemoteAddr, ErrBadHeader, err)
	}
	return auth.Identity{User: vals[0], Admin: h.admins[vals[0]], Method: Method}, true, nil
}
