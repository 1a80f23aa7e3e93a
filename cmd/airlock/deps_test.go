package main

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/airlock-hpc/airlock/"

// banned lists, for each package, imports it must never have (directly or
// through others), and why. The seal side stays small and independent of
// the gateway side, so what runs next to a user's workload carries as
// little as possible; the runner never touches the gateway's store, so a
// gateway restart loses no session.
var banned = map[string]map[string]string{
	"internal/seal":        sealSide,
	"internal/seal/fdpass": sealSide,
	"internal/relay":       sealSide,
	"internal/connector":   sealSide,
	"internal/ticket":      sealSide,
	"internal/vm":          sealSide,
	"internal/runner":      {mod + "internal/store": "the runner reports over the network", mod + "internal/gateway": "", mod + "internal/portal": "", mod + "internal/auth": "", mod + "internal/config": "packages take their own Config", mod + "internal/cli": "only cmd wires the CLI"},
	"cmd/airlock":          {"testing": "the binary must not carry the testing package", mod + "internal/realtest": "test harnesses stay out of the binary"},
}

var sealSide = map[string]string{
	mod + "internal/gateway": "seal side must not import the gateway side",
	mod + "internal/portal":  "", mod + "internal/auth": "", mod + "internal/store": "",
	mod + "internal/backend": "", mod + "internal/config": "", mod + "internal/runner": "runner imports seal, never the reverse",
	mod + "internal/cli": "", "database/sql": "no database next to the workload", "html/template": "no templates in the seal",
	mod + "internal/realtest": "test harnesses stay out of production code",
}

func TestDeps(t *testing.T) {
	for pkg, bad := range banned {
		out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if why, ok := bad[dep]; ok {
				t.Errorf("%s depends on %s: %s", pkg, dep, why)
			}
		}
	}
}

// TestPackageDocs: every package says what it owns.
func TestPackageDocs(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, "\t")
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no package doc comment", path)
		}
	}
}
