package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder copies a YAML node tree onto a Config that holds the defaults,
// checking types, refusing unknown and duplicate keys, and noting the line
// of every key for the validator.
type decoder struct {
	file string
	errs Errors
	// fatal is set when there is no tree worth validating.
	fatal bool
	// lines maps each key path seen ("limits.max_load",
	// "profiles[0]") to its line.
	lines map[string]int
	// set holds the key paths given a value other than null.
	set map[string]bool
	// budget is how many more nodes may be visited: aliases let a small
	// file name a huge tree.
	budget int
}

// maxNodes bounds the nodes a file may expand to through aliases; a real
// config has a few hundred.
const maxNodes = 1 << 16

func newDecoder(file string) *decoder {
	return &decoder{file: file, lines: map[string]int{}, set: map[string]bool{}, budget: maxNodes}
}

func (d *decoder) errorf(line int, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// decode decodes data onto c.
func (d *decoder) decode(data []byte, c *Config) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err != io.EOF {
			d.syntax(err, data)
		}
		return
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		d.syntax(err, data)
		return
	default:
		d.errorf(next.Line, "", "a second YAML document; the file must hold one")
		d.fatal = true
		return
	}
	if len(doc.Content) != 1 {
		return
	}
	root := doc.Content[0]
	if r := resolveAlias(root); r.Kind != yaml.MappingNode && !isNull(r) {
		d.errorf(root.Line, "", "want a mapping of keys (listen: ..., profiles: ...), got %s", describe(r))
		d.fatal = true
		return
	}
	d.value(root, reflect.ValueOf(c).Elem(), "")
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parserErrors are how go.yaml.in/yaml/v3's parser errors begin (the maintained
// successor of gopkg.in/yaml.v3, same messages).
var parserErrors = []string{
	"did not find expected <",
	"did not find expected key",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected ',' or",
	"found undefined tag handle",
	"found duplicate %",
	"found incompatible YAML document",
}

// syntax records a YAML syntax error, adding a hint for the commonest
// cause, tabs.
func (d *decoder) syntax(err error, data []byte) {
	d.fatal = true
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	// go.yaml.in/yaml/v3 reports a parser error (not a scanner error) on the line
	// before the one it means: it forgets to count from 1.
	for _, p := range parserErrors {
		if strings.HasPrefix(msg, p) {
			line++
			break
		}
	}
	if line > 0 {
		lines := bytes.Split(data, []byte("\n"))
		if line <= len(lines) {
			text := lines[line-1]
			indent := text[:len(text)-len(bytes.TrimLeft(text, " \t"))]
			if bytes.IndexByte(indent, '\t') >= 0 && !strings.Contains(msg, "tab") {
				msg += " (this line is indented with a tab; YAML indents with spaces only)"
			}
		}
	}
	d.errorf(line, "", "%s", msg)
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what n is, for "want X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return strconv.Quote(v)
	}
	return "nothing"
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// value decodes n onto v. A null keeps what v holds.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.errorf(n.Line, path, "the file expands to more than %d values (through aliases?)", maxNodes)
			d.fatal = true
		}
		return
	}
	n = resolveAlias(n)
	if isNull(n) {
		return
	}
	switch v.Type() {
	case durationType:
		if s, ok := d.scalar(n, path, "a duration such as 90s, 30m or 8h", "!!str", "!!int"); ok {
			t, err := time.ParseDuration(s)
			if err != nil {
				d.errorf(n.Line, path, "want a duration such as 90s, 30m or 8h (units ns, us, ms, s, m, h), got %q", s)
				return
			}
			v.SetInt(int64(t))
		}
		return
	case sizeType:
		if s, ok := d.scalar(n, path, "a size such as 512M or 2G", "!!str", "!!int"); ok {
			z, err := ParseSize(s)
			if err != nil {
				d.errorf(n.Line, path, "bad size %q: %v", s, err)
				return
			}
			v.SetInt(int64(z))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			p := reflect.New(v.Type().Elem())
			if s, ok := p.Interface().(interface{ setDefaults() }); ok {
				s.setDefaults()
			}
			v.Set(p)
		}
		d.value(n, v.Elem(), path)
	case reflect.Struct:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string", "!!str", "!!int", "!!float", "!!timestamp"); ok {
			v.SetString(s)
		}
	case reflect.Int:
		if _, ok := d.scalar(n, path, "a whole number", "!!int"); ok {
			var i int
			if err := n.Decode(&i); err != nil {
				d.errorf(n.Line, path, "want a whole number, got %s", describe(n))
				return
			}
			v.SetInt(int64(i))
		}
	case reflect.Float64:
		if _, ok := d.scalar(n, path, "a number", "!!int", "!!float"); ok {
			var f float64
			if err := n.Decode(&f); err != nil {
				d.errorf(n.Line, path, "want a number, got %s", describe(n))
				return
			}
			v.SetFloat(f)
		}
	case reflect.Bool:
		if _, ok := d.scalar(n, path, "true or false", "!!bool"); ok {
			var b bool
			if err := n.Decode(&b); err != nil {
				d.errorf(n.Line, path, "want true or false, got %s", describe(n))
				return
			}
			v.SetBool(b)
		}
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// scalar returns n's text if n is a scalar with one of tags.
func (d *decoder) scalar(n *yaml.Node, path, want string, tags ...string) (string, bool) {
	if n.Kind != yaml.ScalarNode || !slices.Contains(tags, n.ShortTag()) {
		d.errorf(n.Line, path, "want %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, path, "want a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = e.Line
		if !isNull(resolveAlias(e)) {
			d.set[p] = true
		}
		// An item of a kind with defaults (images) starts from them.
		if sd, ok := s.Index(i).Addr().Interface().(interface{ setDefaults() }); ok {
			sd.setDefaults()
		}
		d.value(e, s.Index(i), p)
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, path, "want a mapping of keys, got %s", describe(n))
		return
	}
	fs := fieldsOf(v.Type())
	// A kinded struct is reset to the defaults of the kind the file names
	// before its other keys are read; its kind decides which keys it may
	// have. Without a kind key it keeps its kind (a list item has none,
	// which the validator reports).
	k, isKinded := v.Addr().Interface().(kinded)
	kind, kindOK := "", true
	if isKinded {
		kind = v.FieldByName("Kind").String()
		kindOK = slices.Contains(k.kinds(), kind)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if kn := n.Content[i]; kn.Kind == yaml.ScalarNode && kn.Value == "kind" {
				kp := join(path, "kind")
				d.lines[kp] = kn.Line
				vn := resolveAlias(n.Content[i+1])
				if isNull(vn) {
					break
				}
				s, ok := d.scalar(vn, kp, "a string", "!!str")
				if !ok {
					kindOK = false
					break
				}
				d.set[kp] = true
				kind = s
				if kindOK = slices.Contains(k.kinds(), s); kindOK {
					k.reset(s)
				} else {
					v.FieldByName("Kind").SetString(s)
					d.errorf(vn.Line, kp, "unknown kind %q; want %s", s, orList(k.kinds()))
				}
				break
			}
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			d.errorf(kn.Line, path, "want a key name, got %s", describe(kn))
			continue
		}
		if kn.ShortTag() == "!!merge" {
			d.errorf(kn.Line, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		kp := join(path, kn.Value)
		if first, dup := seen[kn.Value]; dup {
			d.errorf(kn.Line, kp, "duplicate key (first at line %d)", first)
			continue
		}
		seen[kn.Value] = kn.Line
		f, ok := fs.byName[kn.Value]
		if !ok {
			d.errorf(kn.Line, kp, "%s", fs.unknown(kn.Value, kind, isKinded))
			continue
		}
		if isKinded && kn.Value == "kind" {
			continue
		}
		if f.kinds != nil && !slices.Contains(f.kinds, kind) {
			if kindOK {
				d.errorf(kn.Line, kp, "only for kind %s, and this is kind %s", orList(f.kinds), kind)
			}
			continue
		}
		d.lines[kp] = kn.Line
		if !isNull(resolveAlias(vn)) {
			d.set[kp] = true
		}
		d.value(vn, v.Field(f.index), kp)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// orList writes "a, b or c".
func orList(ss []string) string {
	if len(ss) == 1 {
		return ss[0]
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " or " + ss[len(ss)-1]
}

// field is a struct field as the file sees it.
type field struct {
	name  string
	index int
	// kinds are the values of the struct's kind key that allow the field;
	// nil allows it for every kind.
	kinds []string
}

type fields struct {
	list   []field
	byName map[string]field
}

var fieldCache sync.Map // reflect.Type → *fields

func fieldsOf(t reflect.Type) *fields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fields)
	}
	fs := &fields{byName: map[string]field{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("yaml")
		if name == "" {
			panic("config: no yaml tag on " + t.String() + "." + sf.Name)
		}
		f := field{name: name, index: i}
		if k := sf.Tag.Get("kind"); k != "" {
			f.kinds = strings.Split(k, ",")
		}
		fs.list = append(fs.list, f)
		fs.byName[name] = f
	}
	fieldCache.Store(t, fs)
	return fs
}

// unknown explains an unknown key: an inline secret, a likely typo, or
// the keys there are.
func (fs *fields) unknown(key, kind string, isKinded bool) string {
	if _, ok := fs.byName[key+"_file"]; ok {
		return fmt.Sprintf("secrets are not written inline; put it in a file only airlock can read and set %s_file", key)
	}
	if strings.Contains(key, "password") || strings.Contains(key, "secret") {
		return "unknown key; secrets are never written inline, only the paths of files holding them (such as search.bind_password_file)"
	}
	var known []string
	best, bestDist := "", 3
	for _, f := range fs.list {
		if isKinded && f.kinds != nil && !slices.Contains(f.kinds, kind) {
			continue
		}
		known = append(known, f.name)
		if dist := editDistance(key, f.name); dist < bestDist && dist <= len(key)/2 {
			best, bestDist = f.name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown key; did you mean %s?", best)
	}
	return "unknown key; want one of " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// normalize replaces nil slices with empty ones, so that a Config compares
// equal to itself written out and read back.
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			normalize(v.Field(i))
		}
	case reflect.Slice:
		if v.IsNil() {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		}
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	}
}
