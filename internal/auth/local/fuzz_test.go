package local

import (
	"bytes"
	"strings"
	"testing"
)

var lineSeeds = []string{
	"alice:admin:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
	"bob:user:$2y$10$abcdefghijklmnopqrstuu5HTEkL9CWaBNQnhVJBVX0e2i3iBwNxa",
	"bob:user:$2a$04$abcdefghijklmnopqrstuu5HTEkL9CWaBNQnhVJBVX0e2i3iBwNxa",
	"# comment",
	"",
	"bob:root:$2y$10$abcdefghijklmnopqrstuu5HTEkL9CWaBNQnhVJBVX0e2i3iBwNxa",
	"bob:user:$argon2id$v=19$m=064,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
	"bob:user:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
	"bob:user:$argon2id$v=19$t=1,m=64,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
	"bob:user:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA",
	"b:user:x:y",
	"Bob:user:$2y$10$abcdefghijklmnopqrstuu5HTEkL9CWaBNQnhVJBVX0e2i3iBwNxa",
}

// FuzzParseLine: a line that parses prints back exactly as it was (each
// user has one spelling, so nothing an admin wrote is silently changed by
// a rewrite), its fields obey the rules, and nothing panics.
func FuzzParseLine(f *testing.F) {
	for _, s := range lineSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseLine(s)
		if err != nil || r == nil {
			if err == nil && s != "" && s[0] != '#' {
				t.Fatalf("%q: neither a user nor a comment", s)
			}
			return
		}
		if got := r.String(); got != s {
			t.Fatalf("round trip:\n got %q\nwant %q", got, s)
		}
		if strings.ContainsAny(r.name, ":\n ") || strings.Count(s, ":") != 2 {
			t.Fatalf("%q: accepted a separator inside a field", s)
		}
	})
}

// FuzzParseFile: a file that parses formats back to itself (plus a final
// newline if it lacked one), and parses again to the same users.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(strings.Join(lineSeeds[:5], "\n")))
	f.Add([]byte(lineSeeds[0] + "\n" + lineSeeds[0] + "\n"))
	f.Add([]byte("\n\n# x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseFile(data)
		if err != nil {
			return
		}
		out := c.format()
		want := data
		if len(data) > 0 && data[len(data)-1] != '\n' {
			want = append(bytes.Clone(data), '\n')
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("format(parse(%q)) = %q", data, out)
		}
		c2, err := parseFile(out)
		if err != nil || len(c2.users) != len(c.users) || len(c2.lines) != len(c.lines) {
			t.Fatalf("reparse: %v", err)
		}
	})
}
