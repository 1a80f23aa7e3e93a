package local

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
)

// TestDecodeEvent: the runner's lines as the gateway sees them, on this
// node whatever a line claims; a torn or foreign line is skipped.
func TestDecodeEvent(t *testing.T) {
	e, ok := DecodeEvent([]byte(`{"event":"ready","id":"s-1","node":"elsewhere","endpoints":{"console":"/run/x.sock"},"tls_sha256":"ab","code":0}`+"\n"), "here")
	if !ok || e.Kind != contract.EventReady || e.Node != "here" || !maps.Equal(e.Endpoints, map[string]string{"console": "/run/x.sock"}) || e.TLSSHA256 != "ab" {
		t.Fatalf("ready: %+v %v", e, ok)
	}
	e, ok = DecodeEvent([]byte(`{"event":"exit","reason":"stopped by SIGTERM","code":143}`), "here")
	if !ok || e.Kind != contract.EventExit || e.Code != 143 || e.Reason != "stopped by SIGTERM" {
		t.Fatalf("exit: %+v %v", e, ok)
	}
	for _, bad := range []string{``, `{"event":"rea`, `{}`, `{"reason":"x"}`, `[1,2]`, `{"event":7}`} {
		if e, ok := DecodeEvent([]byte(bad), "here"); ok {
			t.Errorf("%q read as %+v", bad, e)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"event":"ready","id":"s-1","endpoints":{"console":"/run/x.sock"},"tls_sha256":"ab"}`))
	f.Add([]byte(`{"event":"exit","reason":"r","code":-1}`))
	f.Add([]byte(`{"event":""}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, ok := DecodeEvent(line, "node")
		if !ok {
			return
		}
		if e.Kind == "" || e.Node != "node" {
			t.Fatalf("accepted %+v", e)
		}
		// What it read survives the runner's own encoding.
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		again, ok := DecodeEvent(b, "node")
		if !ok || again.Kind != e.Kind || again.Code != e.Code || again.Reason != e.Reason {
			t.Fatalf("%s: read back as %+v", b, again)
		}
	})
}
