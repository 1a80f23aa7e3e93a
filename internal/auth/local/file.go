package local

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/airlock-hpc/airlock/internal/auth"
)

// The file format, one user a line:
//
//	NAME:ROLE:HASH
//
// NAME passes auth.ValidateUserName; ROLE is "admin" or "user"; HASH is an
// argon2id PHC string or a bcrypt hash. Empty lines and lines starting with
// '#' are kept as they are. Lines end in "\n"; the last may lack it. No
// other whitespace is allowed anywhere, so that what an admin sees is what
// is checked.

const (
	roleAdmin = "admin"
	roleUser  = "user"
)

// record is one user line.
type record struct {
	name  string
	admin bool
	hash  hash
}

func (r *record) String() string {
	role := roleUser
	if r.admin {
		role = roleAdmin
	}
	return r.name + ":" + role + ":" + r.hash.String()
}

// line is one line of the file: a user, or a comment or blank line kept
// verbatim.
type line struct {
	user *record // nil for a comment or blank line
	text string  // the comment or blank line
}

// parseLine parses one line, without its newline. It returns a nil record
// for a comment or blank line.
func parseLine(s string) (*record, error) {
	if s == "" || s[0] == '#' {
		return nil, nil
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		// Also because base64 decoding skips '\r' and '\n'.
		return nil, errors.New("whitespace and control characters are not allowed (a CRLF line ending?)")
	}
	name, rest, ok1 := strings.Cut(s, ":")
	role, h, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return nil, errors.New("want NAME:ROLE:HASH")
	}
	if err := auth.ValidateUserName(name); err != nil {
		return nil, err
	}
	r := &record{name: name}
	switch role {
	case roleAdmin:
		r.admin = true
	case roleUser:
	default:
		return nil, fmt.Errorf("user %s: role must be %q or %q", name, roleAdmin, roleUser)
	}
	hh, err := parseHash(h)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	r.hash = hh
	return r, nil
}

// contents is a parsed file.
type contents struct {
	lines []line
	users map[string]*record
}

// maxFileSize bounds what is read: about 30,000 users of 150 bytes.
const maxFileSize = 4 << 20

// parseFile parses a whole file. Errors name the 1-based line.
func parseFile(data []byte) (*contents, error) {
	c := &contents{users: make(map[string]*record)}
	if len(data) == 0 {
		return c, nil
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	firstLine := make(map[string]int)
	for i, l := range strings.Split(string(data), "\n") {
		r, err := parseLine(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if r == nil {
			c.lines = append(c.lines, line{text: l})
			continue
		}
		if prev, dup := firstLine[r.name]; dup {
			return nil, fmt.Errorf("line %d: user %s: already on line %d", i+1, r.name, prev)
		}
		firstLine[r.name] = i + 1
		c.users[r.name] = r
		c.lines = append(c.lines, line{user: r})
	}
	return c, nil
}

func (c *contents) format() []byte {
	var b bytes.Buffer
	for _, l := range c.lines {
		if l.user != nil {
			b.WriteString(l.user.String())
		} else {
			b.WriteString(l.text)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// clone copies c deeply enough to change its lines and users.
func (c *contents) clone() *contents {
	n := &contents{lines: make([]line, 0, len(c.lines)+1), users: make(map[string]*record, len(c.users)+1)}
	for _, l := range c.lines {
		if l.user != nil {
			r := *l.user
			l.user = &r
			n.users[r.name] = &r
		}
		n.lines = append(n.lines, l)
	}
	return n
}
