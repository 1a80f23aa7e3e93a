package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a config file.
type Error struct {
	// File is the file's name as given to Load, Parse or Check.
	File string
	// Line is the 1-based line of the offending key or value; 0 when the
	// problem belongs to no one line.
	Line int
	// Key is the key's path, such as "profiles[1].app.port"; "" for a
	// problem of YAML syntax or of the file as a whole.
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error returns "FILE:LINE: key.path: what is wrong", without the parts
// that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a file, in file order. Its text has one
// problem per line.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// maxReported is how many problems Load and Parse report.
const maxReported = 10

// truncate returns es as an error (nil when empty), keeping the first n
// problems and saying how many more there are.
func (es Errors) truncate(n int) error {
	if len(es) == 0 {
		return nil
	}
	if len(es) <= n {
		return es
	}
	more := len(es) - n
	out := append(Errors(nil), es[:n]...)
	return append(out, &Error{File: es[0].File, Msg: fmt.Sprintf(
		"%d more problem%s (airlock config check lists them all)", more, plural(more))})
}

func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// within reports whether key is path or inside it.
func within(key, path string) bool {
	if path == "" || key == path {
		return true
	}
	return strings.HasPrefix(key, path) && (key[len(path)] == '.' || key[len(path)] == '[')
}
