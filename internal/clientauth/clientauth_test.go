package clientauth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSaveLoad: the login is kept 0600 in a 0700 directory, read back,
// overridden by the environment, and refused once others may read it.
func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("AIRLOCK_CONFIG_DIR", "") // it would win over XDG_CONFIG_HOME
	t.Setenv("AIRLOCK_GATEWAY", "")
	t.Setenv("AIRLOCK_TOKEN", "")
	t.Setenv("AIRLOCK_CA", "")
	if _, err := Load(); !errors.Is(err, ErrNoLogin) {
		t.Fatalf("Load with nothing saved: %v", err)
	}
	want := Credentials{Gateway: "https://gw.example.org", Token: "alk_secret"}
	if err := Save(want); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "airlock", "login.json")
	for path, mode := range map[string]os.FileMode{p: 0o600, filepath.Dir(p): 0o700} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", path, st.Mode().Perm(), err, mode)
		}
	}
	got, err := Load()
	if err != nil || got != want {
		t.Fatalf("Load: %+v %v", got, err)
	}
	t.Setenv("AIRLOCK_TOKEN", "alk_from_env")
	if got, _ := Load(); got.Token != "alk_from_env" || got.Gateway != want.Gateway {
		t.Fatalf("AIRLOCK_TOKEN did not override: %+v", got)
	}
	os.Chmod(p, 0o644)
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("Load of a 0644 file: %v", err)
	}
}
