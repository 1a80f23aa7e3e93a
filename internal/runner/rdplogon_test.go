package runner

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/seal"
)

// TestNTHashVector: the NT hash of "pw123" as FreeRDP's winpr-hash makes
// it (a second implementation: run when installed), and the vector of
// MS-NLMP 4.2.2.1.2 ("Password").
func TestNTHashVector(t *testing.T) {
	if got := ntHash("Password"); strings.ToUpper(hex.EncodeToString(got)) != "A4F49C406510BDCAB6824EE7C30FD852" {
		t.Errorf("NT hash of Password: %x", got)
	}
	if _, err := os.Stat("/usr/bin/winpr-hash"); err != nil {
		t.Log("winpr-hash missing; checked against MS-NLMP only")
		return
	}
	out, err := exec.Command("/usr/bin/winpr-hash", "-u", "alice", "-p", "pw123").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); hex.EncodeToString(ntHash("pw123")) != want {
		t.Errorf("NT hash of pw123: %x, winpr-hash %s", ntHash("pw123"), want)
	}
}

// TestRDPLogonSpec: what the runner refuses in spec.rdp_logon.
func TestRDPLogonSpec(t *testing.T) {
	ok := contract.RDPLogon{User: "alice", PasswordFile: "/run/a/pw", SAMFile: "/tmp/.airlock-rdp-sam"}
	if err := validateRDPLogon(&ok, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(l *contract.RDPLogon)
		vm   bool
		want string
	}{
		{"vm", func(*contract.RDPLogon) {}, true, "not with vm"},
		{"bad user", func(l *contract.RDPLogon) { l.User = "a:b" }, false, "rdp_logon.user"},
		{"no password", func(l *contract.RDPLogon) { l.PasswordFile = "" }, false, "want one of"},
		{"two passwords", func(l *contract.RDPLogon) { l.PasswordEnv = "PW" }, false, "want one of"},
		{"relative file", func(l *contract.RDPLogon) { l.PasswordFile = "pw" }, false, "clean absolute path"},
		{"bad env", func(l *contract.RDPLogon) { l.PasswordFile, l.PasswordEnv = "", "A-B" }, false, "not an environment variable name"},
		{"sam outside /tmp", func(l *contract.RDPLogon) { l.SAMFile = "/home/alice/sam" }, false, "directly in /tmp"},
	} {
		l := ok
		c.edit(&l)
		if err := validateRDPLogon(&l, c.vm); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestWriteRDPLogon: the SAM file holds the hash, not the password, is
// the owner's alone, and the environment variable is gone once read.
func TestWriteRDPLogon(t *testing.T) {
	scratch := t.TempDir()
	if err := os.Mkdir(filepath.Join(scratch, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	const pw = "Ab3Cd4Ef5Gh6Jk7Mn8Pq"
	t.Setenv("I12NLA_PW", pw)
	r := &run{spec: &Spec{RDPLogon: &contract.RDPLogon{User: "alice", PasswordEnv: "I12NLA_PW", SAMFile: "/tmp/.airlock-rdp-sam"}}}
	owner := seal.Owner{UID: os.Getuid(), GID: os.Getgid()}
	if err := r.writeRDPLogon(owner, scratch); err != nil {
		t.Fatal(err)
	}
	if _, set := os.LookupEnv("I12NLA_PW"); set {
		t.Error("the password's variable outlived the read")
	}
	p := filepath.Join(scratch, "tmp", ".airlock-rdp-sam")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), pw) || string(b) != samLine("alice", pw) || !strings.HasPrefix(string(b), "alice::aad3b435b51404eeaad3b435b51404ee:") {
		t.Errorf("sam file %q", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o400 {
		t.Errorf("sam file mode %v", fi.Mode())
	}
	// A second write (a planted file) is refused, not followed.
	t.Setenv("I12NLA_PW", pw)
	if err := r.writeRDPLogon(owner, scratch); err == nil {
		t.Error("wrote over an existing sam file")
	}
	// A bad password is refused without being quoted.
	t.Setenv("I12NLA_PW", "rm -rf /; x")
	os.Remove(p)
	if err := r.writeRDPLogon(owner, scratch); err == nil || strings.Contains(err.Error(), "rm -rf") {
		t.Errorf("bad password: %v", err)
	}
}

// TestRDPLogonPasswordFileHidden: the file the runner reads the password
// from is one of the paths the seal hides from the workload.
func TestRDPLogonPasswordFileHidden(t *testing.T) {
	r := &run{spec: &Spec{RDPLogon: &contract.RDPLogon{User: "alice", PasswordFile: "/srv/gw/sessions/s-1/rdp.password", SAMFile: "/tmp/.airlock-rdp-sam"}}}
	if h := r.hidden(); !slices.Contains(h, "/srv/gw/sessions/s-1/rdp.password") {
		t.Errorf("hidden %v", h)
	}
}
