package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/check")

// TestCheckGolden checks each testdata/check/NAME.yaml against NAME.golden:
// the exact text of Check's errors, or "ok" and the effective config.
func TestCheckGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/check/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			got := checkOutput(t, file)
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: got\n%s\nwant\n%s", file, got, want)
			}
		})
	}
}

// checkOutput is what `airlock config check` would print for file, and
// checks that Load agrees with Check.
func checkOutput(t *testing.T, file string) []byte {
	t.Helper()
	c, loadErr := Load(file)
	if err := Check(file); err != nil {
		if loadErr == nil {
			t.Fatalf("Check failed but Load did not: %v", err)
		}
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("Check returned %T, want Errors", err)
		}
		for _, e := range es {
			if e.File != file {
				t.Errorf("error names file %q, want %q", e.File, file)
			}
		}
		return []byte(err.Error() + "\n")
	}
	if loadErr != nil {
		t.Fatalf("Check passed but Load failed: %v", loadErr)
	}
	y, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("ok\n"), y...)
}

// TestDefaultsYAML checks that the embedded reference is the default.
func TestDefaultsYAML(t *testing.T) {
	c, err := Parse("defaults.yaml", DefaultsYAML())
	if err != nil {
		t.Fatal(err)
	}
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Errorf("defaults.yaml differs from Default():\n%s", diff(t, c, d))
	}
	if c, err := Load(""); err != nil || !reflect.DeepEqual(c, Default()) {
		t.Errorf(`Load("") = %v, want Default()`, err)
	}
	if err := (&validator{}).configErr(Default()); err != nil {
		t.Errorf("Default() does not validate: %v", err)
	}
}

func (v *validator) configErr(c Config) error {
	v.config(&c)
	return v.errs.truncate(100)
}

func diff(t *testing.T, a, b Config) string {
	t.Helper()
	ya, err1 := a.YAML()
	yb, err2 := b.YAML()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	la, lb := strings.Split(string(ya), "\n"), strings.Split(string(yb), "\n")
	var out []string
	for i := range max(len(la), len(lb)) {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d: %q != %q", i+1, x, y))
		}
	}
	if len(out) == 0 {
		return fmt.Sprintf("%#v\n%#v", a, b)
	}
	return strings.Join(out, "\n")
}

// TestDefaultsDocumentEveryKey checks that defaults.yaml mentions every key
// of every kind, if only in a comment.
func TestDefaultsDocumentEveryKey(t *testing.T) {
	text := string(DefaultsYAML())
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(t2 reflect.Type, path string) {
		switch t2.Kind() {
		case reflect.Pointer, reflect.Slice:
			walk(t2.Elem(), path)
			return
		case reflect.Struct:
		default:
			return
		}
		if seen[t2] {
			return
		}
		seen[t2] = true
		for _, f := range fieldsOf(t2).list {
			if !strings.Contains(text, f.name+":") {
				t.Errorf("defaults.yaml does not mention %s", join(path, f.name))
			}
			walk(t2.Field(f.index).Type, join(path, f.name))
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

// TestFieldDocs checks that every field of the file's types has a doc
// comment that starts with its name and says its default (or that it is
// required): those comments are the reference.
func TestFieldDocs(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		ts, ok := node.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return true
		}
		for _, fld := range st.Fields.List {
			for _, name := range fld.Names {
				n++
				doc := fld.Doc.Text()
				switch {
				case doc == "":
					t.Errorf("%s.%s has no doc comment", ts.Name, name)
				case !strings.HasPrefix(doc, name.Name+" "):
					t.Errorf("%s.%s: doc comment does not start with the field's name", ts.Name, name)
				case !strings.Contains(doc, "Default") && !strings.Contains(doc, "Required"):
					t.Errorf("%s.%s: doc comment gives no default", ts.Name, name)
				}
			}
		}
		return true
	})
	if n < 50 {
		t.Errorf("only %d fields found", n)
	}
}

// TestOverrideKeyByKey checks that a file changes only what it sets.
func TestOverrideKeyByKey(t *testing.T) {
	for _, tc := range []struct {
		file string
		edit func(*Config)
	}{
		{"", func(*Config) {}},
		{"# nothing\n", func(*Config) {}},
		{"~\n", func(*Config) {}},
		{"listen: :9443\n", func(c *Config) { c.Listen = ":9443" }},
		{"listen:\nlimits:\n", func(*Config) {}},
		{"limits: {max_load: 0.5}\n", func(c *Config) { c.Limits.MaxLoad = 0.5 }},
		{"limits: {lifetime_default: 2h}\n", func(c *Config) {
			c.Limits.LifetimeDefault = 2 * time.Hour
			c.Profiles[0].Lifetime.Default = 2 * time.Hour
		}},
		{"backend: {local: {airlock: /opt/airlock}}\n", func(c *Config) { c.Backend.Local.Airlock = "/opt/airlock" }},
		{"auth: {rate_limit: {window: 1m}}\n", func(c *Config) { c.Auth.RateLimit.Window = time.Minute }},
		{"backend: {kind: slurm}\n", func(c *Config) {
			c.Backend = Backend{Kind: "slurm", Slurm: &SlurmBackend{Airlock: "airlock", SbatchArgs: []string{}, NodeAddress: "{node}",
				Output: "/dev/null", JobPrefix: "airlock", Poll: 5 * time.Second, Reconcile: time.Minute}}
		}},
	} {
		got, err := Parse("t.yaml", []byte(tc.file))
		if err != nil {
			t.Errorf("%q: %v", tc.file, err)
			continue
		}
		want := Default()
		tc.edit(&want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n%s", tc.file, diff(t, got, want))
		}
	}
}

// TestProfileDefaults checks that a profile starts from its kind's
// defaults and inherits from limits what it leaves out.
func TestProfileDefaults(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`
limits: {lifetime_default: 2h, idle_timeout_max: 4h}
profiles:
  - {name: a, kind: desktop, lifetime: {max: 3h}}
  - {name: b, kind: app, app: {command: [srv, "--port={port}"], port: 8080}}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Profiles[0], c.Profiles[1]
	if a.Title != "a" || a.Desktop.Geometry != "1280x800" || !reflect.DeepEqual(a.Desktop.Programs, [][]string{{"icewm-session"}, {"xterm"}}) {
		t.Errorf("desktop defaults not applied: %+v %+v", a, a.Desktop)
	}
	if a.Lifetime != (Range[time.Duration]{2 * time.Hour, 3 * time.Hour}) || a.IdleTimeout != (Range[time.Duration]{time.Hour, 4 * time.Hour}) {
		t.Errorf("a: lifetime %v, idle %v", a.Lifetime, a.IdleTimeout)
	}
	if b.Desktop != nil || b.App == nil || b.App.Port != 8080 || b.CPUs.Default != 1 {
		t.Errorf("b: %+v", b)
	}
	if p, ok := c.Profile("b"); !ok || p.Name != "b" {
		t.Errorf("Profile(b) = %v, %v", p, ok)
	}
}

// TestReportedErrors checks that Parse and Load report at most
// maxReported problems and Check all of them, one per line, each naming
// the file and a line.
func TestReportedErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("profiles:\n")
	for i := range 15 {
		fmt.Fprintf(&b, "  - {name: p%d, kind: desktop, cpus: {default: 0}}\n", i)
	}
	file := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxReported+1 || !strings.Contains(lines[maxReported], "5 more problems") {
		t.Errorf("Load: got %d lines:\n%v", len(lines), err)
	}
	for i, l := range lines[:maxReported] {
		if want := fmt.Sprintf("%s:%d: profiles[%d].cpus.default: 0; want at least 1", file, i+2, i); l != want {
			t.Errorf("got  %s\nwant %s", l, want)
		}
	}
	var es Errors
	if err := Check(file); !errors.As(err, &es) || len(es) != 15 {
		t.Errorf("Check: %v", err)
	}
	if err := Check(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Check of a missing file: %v", err)
	}
}

// TestAliasBomb checks that aliases cannot expand a small file into a
// huge config.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-s: &s [" + strings.Repeat("x, ", 99) + "x]\n")
	b.WriteString("x-p: &p [" + strings.Repeat("*s, ", 99) + "*s]\n")
	b.WriteString("x-d: &d {name: p, kind: desktop, desktop: {programs: *p}}\n")
	b.WriteString("profiles: [" + strings.Repeat("*d, ", 999) + "*d]\n")
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Errorf("got %v", err)
	}
}

func TestApplyFlags(t *testing.T) {
	c := Default()
	if err := c.ApplyFlags("", ""); err != nil || !reflect.DeepEqual(c, Default()) {
		t.Fatalf("empty flags changed the config: %v", err)
	}
	if err := c.ApplyFlags("0.0.0.0:443", "rel/dir"); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if c.Listen != "0.0.0.0:443" || c.StateDir != filepath.Join(wd, "rel/dir") {
		t.Errorf("got listen %q, state dir %q", c.Listen, c.StateDir)
	}
	for _, bad := range []string{"8443", "host:https", "[::1]:99999"} {
		err := c.ApplyFlags(bad, "")
		if err == nil || !strings.HasPrefix(err.Error(), "--listen") {
			t.Errorf("ApplyFlags(%q) = %v", bad, err)
		}
	}
}

func TestResolvePaths(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HOME": "/home/a", "XDG_STATE_HOME": "/xdg"}, "/xdg/airlock"},
		{map[string]string{"HOME": "/home/a", "XDG_STATE_HOME": "relative"}, "/home/a/.local/state/airlock"},
		{map[string]string{"HOME": "/home/a"}, "/home/a/.local/state/airlock"},
		{map[string]string{}, ""},
	} {
		got, err := DefaultStateDir(env(tc.env))
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("DefaultStateDir(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
	c, err := Parse("t.yaml", []byte(`
tls: {cert_file: /etc/airlock/cert.pem, key_file: key.pem}
auth:
  methods:
    - {kind: local}
    - kind: ldap
      url: ldaps://ldap.example.org
      ca_file: ca.pem
      search: {bind_dn: cn=x, bind_password_file: pw, base_dn: dc=x}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResolvePaths(env(map[string]string{"HOME": "/home/a"})); err != nil {
		t.Fatal(err)
	}
	const s = "/home/a/.local/state/airlock"
	m := c.Auth.Methods
	for got, want := range map[string]string{
		c.StateDir:                     s,
		c.TLS.CertFile:                 "/etc/airlock/cert.pem",
		c.TLS.KeyFile:                  s + "/key.pem",
		c.AuditLog:                     s + "/audit.log",
		c.Backend.Local.Dir:            s + "/sessions",
		m[0].File:                      s + "/passwd",
		m[1].CAFile:                    s + "/ca.pem",
		m[1].Search.BindPasswordFile:   s + "/pw",
		c.Profiles[0].Desktop.Xvnc:     "Xvnc",
		c.Profiles[0].Desktop.Geometry: "1280x800",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	c = Default()
	c.StateDir = "/srv/airlock"
	if err := c.ResolvePaths(env(nil)); err != nil || c.AuditLog != "/srv/airlock/audit.log" {
		t.Errorf("got %q, %v", c.AuditLog, err)
	}
}

func TestTrustedPrefixes(t *testing.T) {
	m := AuthMethod{Kind: "header", TrustedProxies: []string{"10.0.0.1", "192.168.0.0/16", "::1"}}
	var got []string
	for _, p := range m.TrustedPrefixes() {
		got = append(got, p.String())
	}
	if want := []string{"10.0.0.1/32", "192.168.0.0/16", "::1/128"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 8 * time.Hour: "8h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s",
		5 * time.Minute: "5m", 1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s",
		-2 * time.Hour: "-2h",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("%v does not round-trip: %v %v", d, back, err)
		}
	}
}
