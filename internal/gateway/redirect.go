package gateway

import (
	"net/url"
	"strings"
)

// localPath returns next if a browser told to go there (a Location header,
// a form's hidden field) would stay on this site, and "/" otherwise. It is
// the one check for every redirect target a request supplies: the login
// page's and form's next, and any later handshake that sends the browser
// back.
//
// Browsers do not read a URL the way net/url does (WHATWG URL standard):
// they drop tabs and newlines anywhere in it and C0 controls and spaces at
// its ends, treat a backslash as a slash in http(s) URLs, and take "//host"
// or "/\host" as another host. So rather than normalise as a browser would
// and hope to agree with every browser, localPath accepts only what needs
// no normalising at all: printable ASCII with no backslash, one leading
// slash, no empty or dot path segment (so no "//" to become a host after
// a dot segment is removed), and the same again after each round of
// percent-decoding, for a target that another hop may decode. The paths
// the gateway itself sends people back to (/, /sessions/ID, /admin,
// /share/SECRET) all pass.
func localPath(next string) string {
	if !plainLocal(next) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Opaque != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	// The percent-decoded forms must pass too: "/%2F%2Fevil.example" is
	// harmless here, but not to a hop that decodes it once more.
	p, _, _ := strings.Cut(next, "?")
	p, _, _ = strings.Cut(p, "#")
	for range 4 {
		d, err := url.PathUnescape(p)
		if err != nil {
			return "/"
		}
		if d == p {
			return next
		}
		if !plainLocal(d) {
			return "/"
		}
		p = d
	}
	return "/" // still decoding after four rounds: nobody needs that
}

// plainLocal reports whether s is a path a browser takes as is: starting
// with exactly one slash, printable ASCII other than backslash, and no
// empty, "." or ".." segment in the path.
func plainLocal(s string) bool {
	if len(s) == 0 || s[0] != '/' || len(s) > 2048 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return false
		}
	}
	path, _, _ := strings.Cut(s, "?")
	path, _, _ = strings.Cut(path, "#")
	if strings.Contains(path, "//") {
		return false
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
