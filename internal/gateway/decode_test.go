package gateway

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeJSON: the decoder never panics, and what it accepts is one
// JSON object that encoding/json reads the same way.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"profile":"app","cpus":2}`, `{"profile":"app"} x`, `{"x":1}`, `null`, `[1]`, `{"cpus":"2"}`, `{"a`, " {}\n", `{"persistent":true,"keep_disk":false}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req LaunchRequest
		err := decodeJSON(b, &req)
		if err != nil {
			if ae := asAPIError(err); ae.Status != 400 || ae.Message == "" {
				t.Fatalf("%q: %v: want a 400 with a message", b, err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("%q accepted but not valid JSON", b)
		}
		var again LaunchRequest
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("%q accepted, but encoding/json says %v", b, err)
		}
	})
}
