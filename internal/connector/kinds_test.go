package connector

import (
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
)

// TestEveryKindHasAServer: each kind of the contract's registry is served
// here, and nothing here serves a kind the registry does not declare.
func TestEveryKindHasAServer(t *testing.T) {
	for _, k := range contract.Kinds() {
		if serveKind[k] == nil {
			t.Errorf("kind %s is registered but has no server in this package", k)
		}
	}
	for k := range serveKind {
		if _, ok := contract.Lookup(k); !ok {
			t.Errorf("kind %s is served here but not declared in contract/kinds.go", k)
		}
	}
}
