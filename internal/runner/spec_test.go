package runner

import (
	"fmt"
	"strings"
	"testing"
)

const goodSpec = `{
  "id": "s-7f3a",
  "owner": "alice",
  "workload": {"argv": ["Xvnc", ":1", "-rfbport", "5901", "-SecurityTypes", "None"], "env": {"A": "b"}, "dir": "/home/alice"},
  "processes": [{"argv": ["xterm"], "env": {"DISPLAY": ":1"}}],
  "connectors": [
    {"name": "console", "kind": "vnc",  "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0"},
    {"name": "web",     "kind": "http", "target": "127.0.0.1:8888", "listen": "unix:/run/airlock/s-7f3a/web.sock"},
    {"name": "rdp",     "kind": "tls",  "target": "127.0.0.1:3389", "listen": "tcp:0.0.0.0:0"}
  ],
  "egress": ["127.0.0.1:27000"],
  "lifetime": "8h",
  "ticket_key_file": "/path/to/32-byte-key",
  "tls": {"cert_file": "/path/session.crt", "key_file": "/path/session.key", "client_ca_file": "/path/clients-ca.crt"}
}`

func TestParseSpecGood(t *testing.T) {
	s, err := ParseSpec(strings.NewReader(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "s-7f3a" || len(s.Connectors) != 3 || s.Connectors[2].Kind != "tls" || s.Lifetime.String() != "8h0m0s" {
		t.Fatalf("parsed %+v", s)
	}
}

func TestParseSpecErrors(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(goodSpec, old) {
			t.Fatalf("test edit: %q not in spec", old)
		}
		return strings.Replace(goodSpec, old, new, 1)
	}
	cases := []struct {
		name, spec, want string
	}{
		{"empty", "", "empty spec"},
		{"syntax", "{\n  \"id\": \"x\",\n  oops\n}", "line 3, column 3"},
		{"unknown field", edit(`"owner": "alice",`, `"owner": "alice", "ownr": 1,`), `unknown field "ownr"`},
		{"unknown field line", edit(`"owner": "alice",`, "\"owner\": \"alice\",\n\"ownr\": 1,"), "line 4, column 1"},
		{"wrong type", edit(`"lifetime": "8h"`, `"lifetime": 8`), "lifetime"},
		{"bad duration", edit(`"lifetime": "8h"`, `"lifetime": "8 hours"`), `line 12, column 3: lifetime: want a duration like "8h", got "8 hours"`},
		{"negative duration", edit(`"lifetime": "8h"`, `"lifetime": "-1h"`), `lifetime: want a duration`},
		{"idle type", edit(`"listen": "tcp:127.0.0.1:0"}`, `"listen": "tcp:127.0.0.1:0", "idle": 5}`), `connectors.idle: want a duration like "8h", got 5`},
		{"bad id", edit(`"id": "s-7f3a"`, `"id": "../etc"`), `id "../etc"`},
		{"bad isolation", edit(`"id": "s-7f3a"`, `"id": "s-7f3a", "isolation": "none"`), `isolation "none": want "pod" or none`},
		{"no workload", edit(`"argv": ["Xvnc", ":1", "-rfbport", "5901", "-SecurityTypes", "None"]`, `"argv": []`), "workload.argv: empty"},
		{"bad kind", edit(`"kind": "vnc"`, `"kind": "ssh"`), `connectors[0].kind "ssh"`},
		{"dup name", edit(`"name": "web"`, `"name": "console"`), `connectors[1].name "console": used twice`},
		{"bad listen", edit(`"listen": "tcp:127.0.0.1:0"`, `"listen": "127.0.0.1:0"`), "connectors[0].listen"},
		{"relative unix", edit(`"listen": "unix:/run/airlock/s-7f3a/web.sock"`, `"listen": "unix:web.sock"`), "connectors[1].listen"},
		{"listen hostname", edit(`"listen": "tcp:127.0.0.1:0"`, `"listen": "tcp:localhost:0"`), "host must be an IP address"},
		{"bad target", edit(`"target": "127.0.0.1:5901"`, `"target": "127.0.0.1"`), "connectors[0].target"},
		{"bad egress", edit(`"egress": ["127.0.0.1:27000"]`, `"egress": ["127.0.0.1:0"]`), "egress[0]"},
		{"dup egress port", edit(`"egress": ["127.0.0.1:27000"]`, `"egress": ["127.0.0.1:27000", "10.0.0.1:27000"]`), "port 27000 used twice"},
		{"no key", edit(`"ticket_key_file": "/path/to/32-byte-key",`, ``), "ticket_key_file: required"},
		{"session password on http", edit(`"kind": "http",`, `"kind": "http", "session_vnc_password_file": "/tmp/pw",`), "session_vnc_password_file: not for kind http"},
		{"session password outside /tmp", edit(`"kind": "vnc", `, `"kind": "vnc", "session_vnc_password_file": "/home/alice/pw",`), "want a file directly in /tmp"},
		{"session password in a /tmp subdirectory", edit(`"kind": "vnc", `, `"kind": "vnc", "session_vnc_password_file": "/tmp/x/pw",`), "want a file directly in /tmp"},
		{"clipboard on http", edit(`"kind": "http",`, `"kind": "http", "clipboard": "none",`), "clipboard: not for kind http"},
		{"clipboard unknown", edit(`"kind": "vnc", `, `"kind": "vnc", "clipboard": "sideways",`), `clipboard "sideways": want both, in, out or none`},
		{"session password and a password file", edit(`"kind": "vnc", `, `"kind": "vnc", "session_vnc_password_file": "/tmp/pw", "vnc_password_file": "/etc/pw",`), "not with vnc_password_file"},
		{"both keys", edit(`"ticket_key_file": "/path/to/32-byte-key",`, `"ticket_key_file": "/k", "ticket_key_env": "K",`), "give one"},
		{"bad key env", edit(`"ticket_key_file": "/path/to/32-byte-key",`, `"ticket_key_env": "A-B",`), `ticket_key_env "A-B"`},
		{"tls without ca", edit(`, "client_ca_file": "/path/clients-ca.crt"`, ``), "kind tls needs"},
		{"bad env", edit(`"env": {"A": "b"}`, `"env": {"A=B": "b"}`), `bad variable name "A=B"`},
		{"trailing", goodSpec + "{}", "unexpected data after the spec object"},
		{"relative unix socket", edit(`"egress": ["127.0.0.1:27000"]`, `"egress": ["127.0.0.1:27000"], "unix_sockets": ["agent.sock"]`), `unix_sockets[0] "agent.sock": want a clean absolute path`},
		{"unix socket in /run", edit(`"egress": ["127.0.0.1:27000"]`, `"egress": ["127.0.0.1:27000"], "unix_sockets": ["/run/x.sock"]`), `unix_sockets[0] "/run/x.sock": /run inside the seal is the seal's own`},
		{"hide relative", edit(`"lifetime": "8h",`, `"lifetime": "8h", "hide": ["state"],`), `hide[0] "state": want a clean absolute path`},
		{"hide root", edit(`"lifetime": "8h",`, `"lifetime": "8h", "hide": ["/srv/a", "/"],`), `hide[1] "/"`},
		{"hide unclean", edit(`"lifetime": "8h",`, `"lifetime": "8h", "hide": ["/srv/../etc"],`), `hide[0] "/srv/../etc"`},
		{"hide too many", edit(`"lifetime": "8h",`, `"lifetime": "8h", "hide": [`+strings.Repeat(`"/a",`, maxHide)+`"/a"],`), "at most 64"},
		{"relative dir", edit(`"dir": "/home/alice"`, `"dir": "home"`), `workload.dir "home"`},
		{"rnode without secret", edit(`"kind": "http",`, `"kind": "rnode",`), "secret_env: required for kind rnode"},
		{"rnode bad secret env", edit(`"kind": "http",`, `"kind": "rnode", "secret_env": "A-B",`), `secret_env "A-B"`},
		{"rnode cookie path injection", edit(`"kind": "http",`, `"kind": "rnode", "secret_env": "S", "cookie_path": "/x/; Domain=evil/",`), `cookie_path "/x/; Domain=evil/"`},
		{"rnode relative cookie path", edit(`"kind": "http",`, `"kind": "rnode", "secret_env": "S", "cookie_path": "rnode/h/1/",`), `cookie_path "rnode/h/1/"`},
		{"secret on http", edit(`"kind": "http",`, `"kind": "http", "secret_env": "S",`), "secret_env: not for kind http"},
		{"cookie path on vnc", edit(`"kind": "vnc", `, `"kind": "vnc", "cookie_path": "/x/",`), "cookie_path: not for kind vnc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSpec(strings.NewReader(c.spec))
			if err == nil {
				t.Fatalf("accepted; want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q; want it to contain %q", err, c.want)
			}
		})
	}
}

func TestParseSpecTooLarge(t *testing.T) {
	big := `{"id": "` + strings.Repeat("a", maxSpec) + `"}`
	if _, err := ParseSpec(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
}

// FuzzParseSpec: never panics; whatever is accepted validates, and
// survives a round trip through JSON unchanged in meaning.
func FuzzParseSpec(f *testing.F) {
	f.Add(goodSpec)
	f.Add(`{"id":"a","workload":{"argv":["x"]}}`)
	f.Add(`{"id":"a","workload":{"argv":["x"]},"connectors":[{"name":"c","kind":"vnc","target":"unix:/x","listen":"unix:/y"}],"ticket_key_file":"/k"}`)
	f.Add(`{"id":"a","workload":{"argv":["x"]},"lifetime":"-1s"}`)
	f.Add(vmSpec)
	f.Add(`{"id":"a","vm":{"name":"n","image":"/i","format":"iso","os":"other"}}`)
	f.Add(`{"id":"a","workload":{"argv":["Xvnc"]},"kiosk":{"url":"https://hub.example:8443/x","allow":["idp.example:443","[::1]:1"],"display":":1"}}`)
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSpec(strings.NewReader(in))
		if err != nil {
			return
		}
		if err := ValidateSpec(s); err != nil {
			t.Fatalf("accepted spec fails validation: %v", err)
		}
		b, err := marshalSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ParseSpec(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("round trip refused: %v\n%s", err, b)
		}
		b2, _ := marshalSpec(s2)
		if string(b) != string(b2) {
			t.Fatalf("round trip changed the spec:\n%s\n%s", b, b2)
		}
	})
}

const vmSpec = `{
  "id": "s-vm",
  "vm": {"name": "tiny", "image": "/srv/images/tiny.qcow2", "format": "qcow2", "os": "linux",
         "kernel": "/srv/images/vmlinuz", "initrd": "/srv/images/initrd.gz", "append": "console=ttyS0",
         "cpus": 1, "memory_mb": 256, "rdp": true,
         "share": {"path": "/home/alice", "tag": "home", "read_only": true},
         "volumes": [{"path": "/data", "tag": "data"}]},
  "connectors": [{"name": "console", "kind": "vnc", "target": "unix:/tmp/vnc.sock", "listen": "unix:/run/airlock/s-vm/console.sock"}],
  "ticket_key_file": "/k"
}`

func TestParseSpecVM(t *testing.T) {
	s, err := ParseSpec(strings.NewReader(vmSpec))
	if err != nil {
		t.Fatal(err)
	}
	if s.VM == nil || s.VM.Share == nil || !s.VM.Share.ReadOnly || len(s.VM.Volumes) != 1 {
		t.Fatalf("parsed %+v", s.VM)
	}
	edit := func(old, new string) string {
		if !strings.Contains(vmSpec, old) {
			t.Fatalf("test edit: %q not in spec", old)
		}
		return strings.Replace(vmSpec, old, new, 1)
	}
	for _, c := range []struct{ name, spec, want string }{
		{"workload too", edit(`"id": "s-vm",`, `"id": "s-vm", "workload": {"argv": ["x"]},`), "must be empty with vm"},
		{"format", edit(`"format": "qcow2"`, `"format": "qed"`), `vm.format "qed"`},
		{"os", edit(`"os": "linux"`, `"os": "plan9"`), `os "plan9"`},
		{"relative image", edit(`"image": "/srv/images/tiny.qcow2"`, `"image": "tiny.qcow2"`), "vm.image"},
		{"image in tmp", edit(`"image": "/srv/images/tiny.qcow2"`, `"image": "/tmp/tiny.qcow2"`), "seal's own"},
		{"share in run", edit(`"path": "/home/alice"`, `"path": "/run/user/1000"`), "vm.share.path"},
		{"unclean", edit(`"path": "/data"`, `"path": "/data/../etc"`), "clean absolute"},
		{"firmware", edit(`"os": "linux"`, `"os": "linux", "firmware": "coreboot"`), "firmware"},
		{"accel", edit(`"os": "linux"`, `"os": "linux", "accel": "hax"`), "accel"},
		{"gpu", edit(`"os": "linux"`, `"os": "linux", "gpus": ["01:00.0,romfile=/etc/shadow"]`), "PCI address"},
		{"tag", edit(`"tag": "data"`, `"tag": "da ta"`), "tag"},
		{"windows volumes", edit(`"os": "linux"`, `"os": "windows"`), "read-only"},
		{"name", edit(`"name": "tiny"`, `"name": "../x"`), "vm.name"},
		{"negative", edit(`"cpus": 1`, `"cpus": -1`), "negative"},
		{"iso persistent", edit(`"format": "qcow2"`, `"format": "iso", "persistent_dir": "/srv/keep"`), "ISO has no overlay"},
		{"unknown", edit(`"rdp": true`, `"rdp": true, "vnc": 1`), `unknown field "vnc"`},
	} {
		if _, err := ParseSpec(strings.NewReader(c.spec)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

// TestVNCPasswdFile: the file is what TigerVNC's `vncpasswd -f` writes.
func TestVNCPasswdFile(t *testing.T) {
	// echo password | vncpasswd -f | xxd -p
	if got := fmt.Sprintf("%x", vncPasswdFile("password")); got != "dbd83cfd727a1458" {
		t.Fatalf("got %s, want dbd83cfd727a1458", got)
	}
}
