package kubernetes

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
)

// TestRunnerSpec: the backend adds isolation "pod" whatever the spec
// said (an isolation of the gateway's is replaced, never kept), fixes
// the connectors' ports only with a Service, keeps every other key, and
// refuses a Service for a connector that is not on TCP.
func TestRunnerSpec(t *testing.T) {
	in := `{"id":"s","isolation":"other","x":{"y":1},"connectors":[{"name":"console","listen":"tcp::0","k":2},{"name":"b","listen":"tcp::0"}]}`
	for _, service := range []bool{false, true} {
		b := &Backend{cfg: Config{Service: service}}
		out, err := b.runnerSpec([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Isolation  string          `json:"isolation"`
			X          json.RawMessage `json:"x"`
			Connectors []struct {
				Name, Listen string
				K            int
			}
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		wantListen := "tcp::0"
		if service {
			wantListen = "tcp::7400"
		}
		if got.Isolation != string(contract.IsolationPod) || string(got.X) != `{"y":1}` || len(got.Connectors) != 2 ||
			got.Connectors[0].Listen != wantListen || got.Connectors[0].K != 2 {
			t.Errorf("service %v: %s", service, out)
		}
	}
	b := &Backend{cfg: Config{Service: true}}
	for _, bad := range []string{`[]`, `{"connectors":{}}`, `{"connectors":[{"listen":"unix:/x"}]}`, `{"connectors":[{"listen":5}]}`, `not json`} {
		if out, err := b.runnerSpec([]byte(bad)); err == nil {
			t.Errorf("%s: accepted as %s", bad, out)
		}
	}
}

func FuzzRunnerSpec(f *testing.F) {
	f.Add([]byte(`{"id":"s","connectors":[{"name":"console","listen":"tcp::0"}]}`), true)
	f.Add([]byte(`{"isolation":"x"}`), false)
	f.Fuzz(func(t *testing.T, spec []byte, service bool) {
		b := &Backend{cfg: Config{Service: service}}
		out, err := b.runnerSpec(spec)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("output is not a JSON object: %v", err)
		}
		if string(m["isolation"]) != `"pod"` {
			t.Fatalf("isolation %s", m["isolation"])
		}
		if service && m["connectors"] != nil && string(m["connectors"]) != "null" && !strings.Contains(string(m["connectors"]), "tcp::7400") && string(m["connectors"]) != "[]" {
			t.Fatalf("connectors not on fixed ports: %s", m["connectors"])
		}
	})
}
