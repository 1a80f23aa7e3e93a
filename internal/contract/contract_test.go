package contract

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRegistry: each kind once, and what each side relies on.
func TestRegistry(t *testing.T) {
	seen := map[ConnectorKind]bool{}
	for _, k := range kinds {
		if seen[k.Kind] || k.Kind == "" || strings.ToLower(string(k.Kind)) != string(k.Kind) {
			t.Errorf("kind %q: declared twice, empty or not lower case", k.Kind)
		}
		seen[k.Kind] = true
		if k.View == "" {
			t.Errorf("kind %s: no view", k.Kind)
		}
		// A kind must authenticate its clients one way or the other.
		if !k.Tickets && !k.ClientCerts && !k.Secret {
			t.Errorf("kind %s: neither tickets, client certificates nor a secret", k.Kind)
		}
		// Plain TCP carries the credential in clear: only a kind whose
		// credential is a per-session secret (OnDemand's model) may.
		if k.PlainTCP && (!k.Secret || k.Tickets) {
			t.Errorf("kind %s: plain TCP without being a secret-only kind", k.Kind)
		}
	}
	if got := KindList(); got != "vnc, http, tls or rnode" {
		t.Errorf("KindList %q", got)
	}
	if _, ok := Lookup("rdp"); ok {
		t.Error("Lookup found an undeclared kind")
	}
	yes, no := true, false
	for _, tc := range []struct {
		c    ConnectorSpec
		want bool
	}{
		{ConnectorSpec{Kind: KindVNC}, true},
		{ConnectorSpec{Kind: KindTLS}, false},
		{ConnectorSpec{Kind: KindTLS, Wait: &yes}, true},
		{ConnectorSpec{Kind: KindHTTP, Wait: &no}, false},
	} {
		if got := tc.c.WaitFor(); got != tc.want {
			t.Errorf("%s wait %v: WaitFor %v", tc.c.Kind, tc.c.Wait, got)
		}
	}
}

// TestEventWire: the names on the wire, which runners of an older build
// still print while a newer gateway reads them.
func TestEventWire(t *testing.T) {
	b, err := json.Marshal(Event{Kind: EventReady, ID: "s-1", Endpoints: map[string]string{ConnConsole: "a"}, TLSSHA256: "ab"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"ready","id":"s-1","endpoints":{"console":"a"},"tls_sha256":"ab","code":0}`; string(b) != want {
		t.Errorf("ready is %s, want %s", b, want)
	}
	var e Event
	if err := json.Unmarshal([]byte(`{"event":"exit","reason":"r","code":3}`), &e); err != nil || e.Kind != EventExit || e.Code != 3 {
		t.Errorf("exit read as %+v, %v", e, err)
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"90m"`), &d); err != nil || time.Duration(d) != 90*time.Minute {
		t.Fatalf("%v %v", d, err)
	}
	for _, bad := range []string{`"-1h"`, `"soon"`, `5`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if b, _ := json.Marshal(Duration(0)); string(b) != `""` {
		t.Errorf("zero is %s", b)
	}
}

// TestLeaf: the contract imports only the standard library, so both
// sides can import it and it can never pull one side into the other.
func TestLeaf(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: the contract is a leaf (standard library only)", name, path)
			}
		}
	}
}
