package rdpclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/rdpfile"
)

func TestFindLauncher(t *testing.T) {
	has := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, x := range names {
				if x == n {
					return "/usr/bin/" + n, nil
				}
			}
			return "", errors.New("not found")
		}
	}
	t.Setenv("WAYLAND_DISPLAY", "")
	l, err := FindLauncher("linux", "127.0.0.1:5555", "alice", "", "/tmp/x.rdp", has("xfreerdp", "remmina"))
	if err != nil || l.Argv[0] != "/usr/bin/xfreerdp" || !strings.Contains(strings.Join(l.Argv, " "), "/v:127.0.0.1:5555") {
		t.Errorf("linux: %v %v", l.Argv, err)
	}
	l, err = FindLauncher("linux", "127.0.0.1:5555", "alice", "", "/tmp/x.rdp", has("remmina"))
	if err != nil || l.Argv[0] != "/usr/bin/remmina" || !bytes.Contains(l.RDPFile, []byte("full address:s:127.0.0.1:5555")) {
		t.Errorf("remmina: %v %v", l.Argv, err)
	}
	if _, err := FindLauncher("linux", "a:1", "", "", "/tmp/x.rdp", has()); !errors.Is(err, ErrNoClient) {
		t.Errorf("no client: %v", err)
	}
	l, _ = FindLauncher("windows", "127.0.0.1:5555", "alice", "", `C:\t\x.rdp`, has())
	if l.Argv[0] != "mstsc" || l.Argv[1] != `C:\t\x.rdp` || !bytes.Contains(l.RDPFile, []byte("username:s:alice")) {
		t.Errorf("windows: %v", l.Argv)
	}
	l, _ = FindLauncher("darwin", "127.0.0.1:5555", "alice", "", "/tmp/x.rdp", has())
	if l.Argv[0] != "open" || l.Argv[len(l.Argv)-1] != "/tmp/x.rdp" {
		t.Errorf("darwin: %v", l.Argv)
	}
}

// TestCmdRDPPlainSentences: a bad file, an expired file and an
// unreachable gateway each give one sentence and exit code 1.
func TestCmdRDPPlainSentences(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.airlock")
	os.WriteFile(bad, []byte("full address:s:x"), 0o600)
	f := sampleFile(t)
	f.Expires = time.Now().Add(-time.Minute)
	b, _ := f.Marshal()
	expired := filepath.Join(dir, "expired.airlock")
	os.WriteFile(expired, b, 0o600)
	f.Expires = time.Now().Add(time.Hour)
	f.Gateway = "127.0.0.1:1" // nothing listens on port 1
	b, _ = f.Marshal()
	down := filepath.Join(dir, "down.airlock")
	os.WriteFile(down, b, 0o600)
	for file, want := range map[string]string{
		bad:                                "not an .airlock file",
		expired:                            "expired",
		down:                               "Cannot reach the gateway",
		filepath.Join(dir, "none.airlock"): "cannot read",
	} {
		var out bytes.Buffer
		code := CmdRDP(context.Background(), []string{"--no-launch", file}, &out, &out)
		if code != 1 || !strings.Contains(out.String(), want) || strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
			t.Errorf("%s: exit %d, %q; want one line with %q", filepath.Base(file), code, out.String(), want)
		}
	}
}

func sampleFile(t *testing.T) *rdpfile.File {
	t.Helper()
	// A real certificate and key, as the gateway makes them.
	b, err := os.ReadFile(filepath.Join("testdata", "sample.airlock"))
	if err == nil {
		f, err := rdpfile.Parse(b)
		if err == nil {
			return f
		}
	}
	t.Skip("no testdata/sample.airlock")
	return nil
}

// TestLauncherPassword: the guest's one-time password reaches FreeRDP on
// its standard input, never its command line (world-readable in /proc),
// and no .rdp file outside Windows holds it in clear.
func TestLauncherPassword(t *testing.T) {
	const pw = "Ab3Cd4Ef5Gh6Jk7Mn8Pq"
	t.Setenv("WAYLAND_DISPLAY", "")
	lookup := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, x := range names {
				if x == n {
					return "/usr/bin/" + n, nil
				}
			}
			return "", errors.New("not found")
		}
	}
	l, err := FindLauncher("linux", "127.0.0.1:5555", "alice", pw, "/tmp/x.rdp", lookup("xfreerdp"))
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Join(l.Argv, " ")
	if strings.Contains(argv, pw) || !strings.Contains(argv, "/from-stdin:force") || !strings.Contains(argv, "/u:alice") || string(l.Stdin) != pw+"\n" || !l.PasswordGiven {
		t.Errorf("xfreerdp: argv %q, stdin %q, given %v", argv, l.Stdin, l.PasswordGiven)
	}
	cmd, err := l.Command(filepath.Join(t.TempDir(), "x.rdp"))
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := io.ReadAll(cmd.Stdin); string(in) != pw+"\n" || strings.Contains(strings.Join(cmd.Args, " "), pw) {
		t.Errorf("command: stdin %q, args %q", in, cmd.Args)
	}
	for _, goos := range []string{"linux", "darwin"} {
		l, err = FindLauncher(goos, "127.0.0.1:5555", "alice", pw, "/tmp/x.rdp", lookup("remmina"))
		if err != nil || bytes.Contains(l.RDPFile, []byte(pw)) || strings.Contains(strings.Join(l.Argv, " "), pw) || l.PasswordGiven {
			t.Errorf("%s: %v %q %v", goos, err, l.RDPFile, l.PasswordGiven)
		}
	}
}
