package runner

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/vm"
)

func TestValidateRDPPassword(t *testing.T) {
	ok := []VMSpec{
		{RDP: true},
		{RDP: true, RDPPasswordFile: "/tmp/gw/sessions/s-1/rdp.password", RDPUser: "alice"},
		{RDP: true, RDPPasswordEnv: "AIRLOCK_RDP_PASSWORD"},
	}
	for _, v := range ok {
		if err := validateRDPPassword(&v); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
	bad := map[string]VMSpec{
		"one or the other":     {RDP: true, RDPPasswordFile: "/p", RDPPasswordEnv: "P"},
		"only with vm.rdp":     {RDPPasswordFile: "/p"},
		"not an environment":   {RDP: true, RDPPasswordEnv: "A-B"},
		"clean absolute path":  {RDP: true, RDPPasswordFile: "rel/p"},
		"want 1-64":            {RDP: true, RDPPasswordEnv: "P", RDPUser: "a b"},
		"only with vm.rdp_pas": {RDP: true, RDPUser: "alice"},
	}
	for want, v := range bad {
		if err := validateRDPPassword(&v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", v, err, want)
		}
	}
}

// TestReadRDPPassword: from a file or the environment, which is unset at
// once (nothing the runner starts inherits it); a bad password is refused
// without being repeated in the error, which reaches logs.
func TestReadRDPPassword(t *testing.T) {
	const pw = "Ab3Cd4Ef5Gh6Jk7Mn8Pq"
	t.Setenv("AIRLOCK_RDP_PASSWORD", pw)
	got, err := readRDPPassword(&VMSpec{RDP: true, RDPPasswordEnv: "AIRLOCK_RDP_PASSWORD"})
	if err != nil || got != pw {
		t.Fatalf("env: %q %v", got, err)
	}
	if _, set := os.LookupEnv("AIRLOCK_RDP_PASSWORD"); set {
		t.Error("the variable is still set")
	}
	p := filepath.Join(t.TempDir(), "rdp.password")
	os.WriteFile(p, []byte(pw+"\n"), 0o600)
	if got, err := readRDPPassword(&VMSpec{RDP: true, RDPPasswordFile: p}); err != nil || got != pw {
		t.Fatalf("file: %q %v", got, err)
	}
	const bad = "short;rm -rf /"
	t.Setenv("AIRLOCK_RDP_PASSWORD", bad)
	if _, err := readRDPPassword(&VMSpec{RDP: true, RDPPasswordEnv: "AIRLOCK_RDP_PASSWORD"}); err == nil || strings.Contains(err.Error(), "rm -rf") {
		t.Errorf("bad password: %v", err)
	}
	if got, err := readRDPPassword(&VMSpec{RDP: true}); got != "" || err != nil {
		t.Errorf("none: %q %v", got, err)
	}
}

// TestRDPPasswordNotOnArgv: QEMU gets the password as the path of a file,
// the account's name as a value.
func TestRDPPasswordNotOnArgv(t *testing.T) {
	v := &VMSpec{Name: "w", Image: "/srv/w.qcow2", Format: "qcow2", OS: "windows", RDP: true, RDPPasswordEnv: "P", RDPUser: "alice"}
	m := machine(v, "tcg", vm.Overlay, vm.Firmware{})
	m.OEMStrings = vm.OEMStringsFile
	args, err := vm.Args(m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(args, "type=11,path="+vm.OEMStringsFile) || !slices.Contains(args, "type=11,value=airlock.rdp_user=alice") {
		t.Errorf("argv: %q", args)
	}
	if strings.Contains(strings.Join(args, " "), vm.OEMRDPPassword) {
		t.Errorf("the password's OEM string is on the command line: %q", args)
	}
}
