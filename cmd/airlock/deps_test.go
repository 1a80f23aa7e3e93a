package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/airlock-hpc/airlock/"

// rule is one import rule of STYLE.md §4: no package matched by from may
// depend (directly or through others) on a package matched by deny, unless
// the dependency is also matched by allow. Patterns are module-relative
// ("internal/store") for our packages and full import paths otherwise; a
// trailing "/..." matches the package and everything below it, and "..."
// alone matches every package of the module.
type rule struct {
	from  []string
	deny  []string
	allow []string
	// skip names packages matched by from that the rule does not apply to
	// (the test-only harness packages, which may import testing).
	skip []string
	why  string
}

// sealSide is what runs next to a user's workload: it stays small and
// independent of the gateway side.
var sealSide = []string{"internal/seal/...", "internal/relay/...", "internal/connector/...", "internal/ticket/...", "internal/vm/...", "internal/kioskwm/..."}

// testOnly are packages only _test.go files may import.
var testOnly = []string{"internal/realtest/...", "internal/store/storetest/...", "internal/auth/internal/authtest/...", "internal/anchorbench/..."}

// rules are STYLE.md §4's "what must never import what", numbered as there.
var rules = []rule{
	// 1. The seal side.
	{from: sealSide, deny: []string{"internal/gateway/...", "internal/portal/...", "internal/auth/...", "internal/store/...", "internal/backend/...", "internal/config/...", "internal/cli/...", "internal/registration/..."},
		why: "the seal side never imports the gateway side"},
	{from: sealSide, deny: []string{"internal/runner/..."},
		why: "runner imports seal and vm, never the reverse"},
	{from: sealSide, deny: []string{"database/sql", "modernc.org/sqlite/...", "github.com/jackc/pgx/...", "github.com/go-ldap/ldap/...", "github.com/jimlambrt/gldap/...", "github.com/coreos/go-oidc/...", "html/template"},
		why: "no database, directory, OIDC or template code next to the workload"},
	// 2. The runner.
	{from: []string{"internal/runner/..."}, deny: []string{"internal/store/...", "internal/gateway/...", "internal/portal/...", "internal/auth/...", "internal/backend/..."},
		why: "the runner reports to the gateway over the network and never touches its store, so a gateway restart loses no session"},
	// The gateway side of the contract: the gateway and the runner share
	// a leaf package, never each other.
	{from: []string{"internal/gateway/..."}, deny: []string{"internal/runner/...", "internal/seal/..."},
		why: "the gateway never imports the runner: both sides share the typed session contract in a leaf package, and backends start `airlock run` as a process"},
	{from: []string{"internal/gateway/..."}, deny: []string{"internal/store/sqlite/...", "internal/store/postgres/...", "internal/backend/local/...", "internal/backend/slurm/..."},
		why: "the gateway depends on the store.Store and backend.Backend interfaces; cmd wires the implementations"},
	// 3. The store knows only session types.
	{from: []string{"internal/store/..."}, deny: []string{"..."}, allow: []string{"internal/store/...", "internal/session/..."},
		why: "the store knows only session types"},
	// 4. Auth gets lookups through an interface the caller supplies.
	{from: []string{"internal/auth/..."}, deny: []string{"internal/gateway/...", "internal/portal/...", "internal/store/...", "internal/session/...", "internal/backend/...", "internal/runner/..."},
		why: "auth returns an Identity and gets user lookups through a small interface the caller supplies; it never touches sessions or the store"},
	// 5. The portal renders view models.
	{from: []string{"internal/portal/..."}, deny: []string{"internal/store/...", "internal/backend/...", "internal/runner/...", "internal/gateway/...", "internal/auth/...", "database/sql"},
		why: "the portal renders view models that the gateway builds"},
	// 6. Backends start `airlock run`, nothing more.
	{from: []string{"internal/backend/..."}, deny: []string{"internal/gateway/...", "internal/runner/...", "internal/portal/...", "internal/store/...", "internal/auth/..."},
		why: "backends depend on nothing of the gateway"},
	{from: []string{"internal/backend/..."}, deny: sealSide,
		why: "a backend starts `airlock run` as a process or job, never a runner or seal in-process, so a runner outlives a gateway restart"},
	// 7. The tunnel client runs on users' laptops (no such package yet;
	// the rule waits for it).
	{from: []string{"internal/tunnel/..."}, deny: []string{"internal/gateway/...", "internal/store/...", "internal/portal/..."},
		why: "the tunnel client runs on users' laptops: its dependency set stays small"},
	// 8. Only cmd (through cli, its wiring) reads config; only cmd runs cli.
	{from: []string{"..."}, skip: []string{"cmd/airlock", "internal/cli"}, deny: []string{"internal/config/..."},
		why: "packages take their own Config structs; only cmd/airlock and its wiring (internal/cli) read airlock.yaml"},
	{from: []string{"..."}, skip: []string{"cmd/airlock"}, deny: []string{"internal/cli/..."},
		why: "only cmd/airlock wires the CLI"},
	// 9. Test harnesses stay out of the binary.
	{from: []string{"..."}, skip: testOnly, deny: append([]string{"testing"}, testOnly...),
		why: "only _test.go files import test harnesses: the built binary must not carry the testing package"},
	// 10. session is the vocabulary everything imports.
	{from: []string{"internal/session/..."}, deny: []string{"..."}, allow: []string{"internal/session/..."},
		why: "session imports nothing from the module: everything may import it"},
	// The config's YAML library: gopkg.in/yaml.v3 is archived upstream.
	{from: []string{"..."}, deny: []string{"gopkg.in/yaml.v3"},
		why: "gopkg.in/yaml.v3 is archived; use go.yaml.in/yaml/v3, its maintained successor"},
}

// match reports whether the import path pkg is matched by pattern.
func match(pattern, pkg string) bool {
	if pattern == "..." {
		return strings.HasPrefix(pkg, mod) || pkg == strings.TrimSuffix(mod, "/")
	}
	if strings.HasPrefix(pattern, "internal/") || strings.HasPrefix(pattern, "cmd/") {
		pattern = mod + pattern
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, pkg) })
}

// checkDeps applies rules to an import graph (package → its direct
// imports, standard library included) and returns one line per broken
// rule, naming the chain of imports that breaks it.
func checkDeps(graph map[string][]string, rules []rule) []string {
	var bad []string
	pkgs := make([]string, 0, len(graph))
	for p := range graph {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, r := range rules {
		for _, pkg := range pkgs {
			if !matchAny(r.from, pkg) || matchAny(r.skip, pkg) {
				continue
			}
			// Breadth first, so the chain reported is a shortest one.
			prev := map[string]string{pkg: ""}
			queue := []string{pkg}
			for len(queue) > 0 {
				cur := queue[0]
				queue = queue[1:]
				for _, dep := range graph[cur] {
					if _, seen := prev[dep]; seen {
						continue
					}
					prev[dep] = cur
					if matchAny(r.deny, dep) && !matchAny(r.allow, dep) {
						chain := []string{dep}
						for p := cur; p != ""; p = prev[p] {
							chain = append(chain, p)
						}
						slices.Reverse(chain)
						for i := range chain {
							chain[i] = strings.TrimPrefix(chain[i], mod)
						}
						bad = append(bad, fmt.Sprintf("%s: %s", strings.Join(chain, " → "), r.why))
						continue
					}
					queue = append(queue, dep)
				}
			}
		}
	}
	return bad
}

// TestDeps checks STYLE.md §4's import rules on the module's real import
// graph (non-test files only: _test.go files may import harnesses).
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "\t")
		graph[pkg] = strings.Fields(imports)
	}
	for _, must := range []string{"internal/gateway", "internal/runner", "internal/store/sqlite", "internal/portal", "internal/backend/local", "internal/session", "cmd/airlock"} {
		if _, ok := graph[mod+must]; !ok {
			t.Fatalf("go list did not list %s; the rules would check nothing", must)
		}
	}
	for _, msg := range checkDeps(graph, rules) {
		t.Error(msg)
	}
}

// TestDepsRulesCatch feeds the checker a module in which every rule is
// broken once, as a contributor in a hurry would break it, and expects
// each break to be reported: a rule that matches nothing defends nothing.
func TestDepsRulesCatch(t *testing.T) {
	m := func(s string) string { return mod + s }
	attacks := []struct {
		name      string
		from, dep string
		via       []string // packages between from and dep
	}{
		{"seal imports store", "internal/seal", "internal/store", nil},
		{"connector reaches sqlite through ticket", "internal/connector", "database/sql", []string{"internal/ticket"}},
		{"vm imports runner", "internal/vm", "internal/runner", nil},
		{"runner imports store", "internal/runner", "internal/store", nil},
		{"gateway imports runner for the spec", "internal/gateway", "internal/runner", nil},
		{"gateway reaches the seal through vm", "internal/gateway", "internal/seal", []string{"internal/vm"}},
		{"gateway imports the sqlite store", "internal/gateway", "internal/store/sqlite", nil},
		{"store imports backend", "internal/store/sqlite", "internal/backend", nil},
		{"store imports ticket", "internal/store", "internal/ticket", nil},
		{"auth imports store", "internal/auth/local", "internal/store", nil},
		{"auth imports session", "internal/auth", "internal/session", nil},
		{"portal imports store", "internal/portal", "internal/store", nil},
		{"portal imports backend", "internal/portal", "internal/backend", nil},
		{"backend imports gateway", "internal/backend/slurm", "internal/gateway", nil},
		{"backend runs the runner in-process", "internal/backend/local", "internal/runner", nil},
		{"backend runs the seal in-process", "internal/backend/local", "internal/seal", nil},
		{"tunnel imports store", "internal/tunnel", "internal/store", nil},
		{"gateway imports config", "internal/gateway", "internal/config", nil},
		{"runner imports cli", "internal/runner", "internal/cli", nil},
		{"binary carries testing", "cmd/airlock", "testing", nil},
		{"gateway imports realtest", "internal/gateway", "internal/realtest", nil},
		{"session imports ticket", "internal/session", "internal/ticket", nil},
		{"config imports archived yaml", "internal/config", "gopkg.in/yaml.v3", nil},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			full := func(s string) string {
				if strings.HasPrefix(s, "internal/") || strings.HasPrefix(s, "cmd/") {
					return m(s)
				}
				return s
			}
			chain := append(append([]string{a.from}, a.via...), a.dep)
			graph := map[string][]string{}
			for i := 0; i+1 < len(chain); i++ {
				graph[full(chain[i])] = []string{full(chain[i+1])}
			}
			graph[full(a.dep)] = nil
			got := checkDeps(graph, rules)
			want := strings.Join(chain, " → ") + ":"
			if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
				t.Errorf("breaking the rule went unreported: want a line starting %q, got %q", want, got)
			}
		})
	}
	// And the allowed edges stay allowed.
	allowed := map[string][]string{
		m("internal/gateway"):      {m("internal/session"), m("internal/store"), m("internal/backend"), m("internal/portal"), m("internal/ticket")},
		m("internal/store/sqlite"): {m("internal/store"), m("internal/session"), "database/sql"},
		m("internal/runner"):       {m("internal/seal"), m("internal/vm"), m("internal/session")},
		m("internal/cli"):          {m("internal/config")},
		m("cmd/airlock"):           {m("internal/cli")},
		m("internal/realtest"):     {"testing"},
	}
	if got := checkDeps(allowed, rules); len(got) > 0 {
		t.Errorf("allowed edges reported: %q", got)
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
