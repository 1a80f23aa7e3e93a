package rdpclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseTargetsCompile is the CI check that the client side builds
// for every platform `make release` ships (the Makefile's RELEASE_TARGETS).
func TestReleaseTargetsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds take a while")
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, line := range strings.Split(string(mk), "\n") {
		if v, ok := strings.CutPrefix(line, "RELEASE_TARGETS := "); ok {
			targets = strings.Fields(v)
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/arm64", "darwin/amd64", "windows/amd64"} {
		if !strings.Contains(" "+strings.Join(targets, " ")+" ", " "+want+" ") {
			t.Errorf("RELEASE_TARGETS lacks %s", want)
		}
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	for _, tg := range targets {
		os_, arch, _ := strings.Cut(tg, "/")
		cmd := exec.Command(gobin, "build", "-o", os.DevNull, "../../cmd/airlock-client")
		cmd.Env = append(os.Environ(), "GOOS="+os_, "GOARCH="+arch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", tg, err, out)
		}
	}
}
