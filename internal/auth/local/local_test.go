package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(helperWriter(spec))
	}
	authtest.Main(m, "airlock/internal/auth/local")
}

// testParams make hashing cheap, so tests can hash hundreds of times; the
// format and the code path are the same as with DefaultParams.
var testParams = Params{Memory: 64, Time: 1, Threads: 1}

func newFile(t testing.TB, path string) *File {
	t.Helper()
	f, err := New(Config{Path: path, Params: testParams, Logger: authtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func usersPath(t testing.TB) string { return filepath.Join(t.TempDir(), "users") }

func wantIdentity(t *testing.T, f *File, user, password string, admin bool) {
	t.Helper()
	id, err := f.Authenticate(context.Background(), user, password)
	if err != nil {
		t.Fatalf("Authenticate(%s): %v", user, err)
	}
	if want := (auth.Identity{User: user, Admin: admin, Method: "local"}); !reflect.DeepEqual(id, want) {
		t.Fatalf("Authenticate(%s) = %+v, want %+v", user, id, want)
	}
}

func wantInvalid(t *testing.T, f *File, user, password string) {
	t.Helper()
	id, err := f.Authenticate(context.Background(), user, password)
	if !errors.Is(err, auth.ErrInvalid) || !reflect.DeepEqual(id, auth.Identity{}) {
		t.Fatalf("Authenticate(%q) = %+v, %v; want ErrInvalid", user, id, err)
	}
}

var lineRE = regexp.MustCompile(`^alice:admin:\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}\nbob:user:\$argon2id\$`)

func TestAddAuthenticateAndFileFormat(t *testing.T) {
	path := usersPath(t)
	f := newFile(t, path)
	if err := f.Add("alice", []byte("correct horse"), true); err != nil {
		t.Fatal(err)
	}
	if err := f.Add("bob", []byte("battery staple"), false); err != nil {
		t.Fatal(err)
	}
	wantIdentity(t, f, "alice", "correct horse", true)
	wantIdentity(t, f, "bob", "battery staple", false)
	wantInvalid(t, f, "alice", "battery staple")
	wantInvalid(t, f, "alice", "correct horse ")
	wantInvalid(t, f, "carol", "correct horse")
	wantInvalid(t, f, "alice", "")

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !lineRE.Match(data) || bytes.Count(data, []byte("\n")) != 2 {
		t.Errorf("file content:\n%s", data)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".users.*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// A new File on the same path reads what was written.
	g := newFile(t, path)
	wantIdentity(t, g, "alice", "correct horse", true)
	users, err := g.List()
	if err != nil {
		t.Fatal(err)
	}
	if want := []User{{"alice", true}, {"bob", false}}; fmt.Sprint(users) != fmt.Sprint(want) {
		t.Errorf("List = %v, want %v", users, want)
	}
}

func TestAddRefuses(t *testing.T) {
	f := newFile(t, usersPath(t))
	if err := f.Add("alice", []byte("password1"), false); err != nil {
		t.Fatal(err)
	}
	err := f.Add("alice", []byte("password2"), true)
	if !errors.Is(err, ErrUserExists) {
		t.Fatalf("adding alice twice: %v", err)
	}
	if !strings.Contains(err.Error(), "add user alice to ") || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("unclear error: %v", err)
	}
	wantIdentity(t, f, "alice", "password1", false) // unchanged

	for _, name := range []string{"", "Alice", "-alice", ".alice", "_a", "al ice", "al:ice", "al/ice", "al\nice",
		"alice\x00", "ålice", strings.Repeat("a", 65), "a,ou=x", "*"} {
		if err := f.Add(name, []byte("password1"), false); err == nil || !strings.Contains(err.Error(), "invalid user name") {
			t.Errorf("Add(%q): %v, want an invalid-name error", name, err)
		}
	}
	for _, name := range []string{"a", "0", "a.b-c_d", strings.Repeat("z", 64), "9lives"} {
		if err := f.Add(name, []byte("password1"), false); err != nil {
			t.Errorf("Add(%q): %v", name, err)
		}
	}
	if err := f.Add("shorty", []byte("1234567"), false); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("7-character password: %v", err)
	}
	if err := f.Add("shorty", []byte("ééééééé"), false); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("7 characters in 14 bytes: %v", err)
	}
	if err := f.Add("newline", []byte("password1\n"), false); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("password with a newline: %v", err)
	}
	if err := f.Add("huge", bytes.Repeat([]byte("x"), MaxPasswordLen+1), false); err == nil {
		t.Error("accepted an over-long password")
	}

	g, err := New(Config{Path: usersPath(t), Params: testParams, MinPasswordLen: 12})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Add("alice", []byte("elevenchars"), false); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("MinPasswordLen 12, 11 characters: %v", err)
	}
	if err := g.Add("alice", []byte("twelve chars"), false); err != nil {
		t.Error(err)
	}
}

func TestSetPasswordAndRemove(t *testing.T) {
	f := newFile(t, usersPath(t))
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := f.Add(u, []byte(u+"-password"), u == "bob"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.SetPassword("bob", []byte("new-bob-password")); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, f, "bob", "bob-password")
	wantIdentity(t, f, "bob", "new-bob-password", true) // role kept
	if err := f.SetPassword("dave", []byte("whatever1")); !errors.Is(err, ErrNoUser) {
		t.Errorf("SetPassword(dave): %v", err)
	}
	if err := f.SetPassword("bob", []byte("short")); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("SetPassword short: %v", err)
	}
	if err := f.SetAdmin("bob", false); err != nil {
		t.Fatal(err)
	}
	wantIdentity(t, f, "bob", "new-bob-password", false) // password kept
	if admin, ok, err := f.Role("bob"); admin || !ok || err != nil {
		t.Errorf("Role(bob) after demotion = %v, %v, %v", admin, ok, err)
	}
	if err := f.SetAdmin("dave", true); !errors.Is(err, ErrNoUser) {
		t.Errorf("SetAdmin(dave): %v", err)
	}
	if err := f.Remove("bob"); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, f, "bob", "new-bob-password")
	if err := f.Remove("bob"); !errors.Is(err, ErrNoUser) {
		t.Errorf("removing bob twice: %v", err)
	}
	users, _ := f.List()
	if fmt.Sprint(users) != fmt.Sprint([]User{{"alice", false}, {"carol", false}}) {
		t.Errorf("List = %v", users)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Via rename, as an editor or `sed -i` does, so the inode changes.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestImportedBcryptAndComments: an admin pastes htpasswd -B lines (with
// the role inserted) between comments; the comments survive a rewrite.
func TestImportedBcryptAndComments(t *testing.T) {
	path := usersPath(t)
	h2a, err := bcrypt.GenerateFromPassword([]byte("htpasswd-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// $2y$ (PHP, Apache) and $2b$ (OpenBSD) are the same algorithm as $2a$.
	h2y := "$2y$" + string(h2a[4:])
	h2b := "$2b$" + string(h2a[4:])
	content := "# imported from .htpasswd\n\nold:user:" + string(h2a) + "\nolder:admin:" + h2y + "\noldest:user:" + h2b + "\n# end\n"
	writeFile(t, path, content)
	f := newFile(t, path)
	wantIdentity(t, f, "old", "htpasswd-pw", false)
	wantIdentity(t, f, "older", "htpasswd-pw", true)
	wantIdentity(t, f, "oldest", "htpasswd-pw", false)
	wantInvalid(t, f, "old", "htpasswd-PW")

	if err := f.Add("new", []byte("new-password"), false); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("older"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := "# imported from .htpasswd\n\nold:user:" + string(h2a) + "\noldest:user:" + h2b + "\n# end\nnew:user:$argon2id$"
	if !strings.HasPrefix(string(data), want) {
		t.Errorf("rewritten file:\n%s\nwant prefix:\n%s", data, want)
	}
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	good := "alice:user:" + mustHash(t, "password1")
	for _, tc := range []struct{ content, want string }{
		{"# c\n" + good + "\nbob:root:" + mustHash(t, "x") + "\n", `line 3: user bob: role must be "admin" or "user"`},
		{good + "\n" + good + "\n", "line 2: user alice: already on line 1"},
		{good + "\r\n", "line 1: whitespace and control characters are not allowed"},
		{"\n\nBob:user:" + mustHash(t, "x"), "line 3: invalid user name"},
		{"bob:user:{SSHA}abc", "line 1: user bob: unknown hash format"},
		{"bob:user:$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "argon2id hashes are supported"},
		{"bob:user:$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "m must be"},
		{"bob:user:$2y$31$" + strings.Repeat("a", 53), "cost 31 is outside"},
		{"bob:user", "line 1: want NAME:ROLE:HASH"},
	} {
		path := usersPath(t)
		writeFile(t, path, tc.content)
		_, err := New(Config{Path: path, Params: testParams})
		if err == nil || !strings.Contains(err.Error(), "read users file "+path+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("content %q:\n got %v\nwant read users file %s: ...%s", tc.content, err, path, tc.want)
		}
	}
}

func mustHash(t testing.TB, pw string) string {
	h, err := newArgon2Hash([]byte(pw), testParams)
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestRefusesReadableFile(t *testing.T) {
	path := usersPath(t)
	writeFile(t, path, "alice:user:"+mustHash(t, "password1")+"\n")
	os.Chmod(path, 0o640)
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "mode 0640") {
		t.Fatalf("Open of a 0640 file: %v", err)
	}
	os.Chmod(path, 0o600)
	if _, err := Open(path); err != nil {
		t.Fatal(err)
	}
}

// TestNoticesOtherWriters: `airlock users` changes the file while the
// gateway holds it open; a hand edit breaks it and the gateway refuses
// local logins (ErrUnavailable) rather than use the old file.
func TestNoticesOtherWriters(t *testing.T) {
	path := usersPath(t)
	gateway := newFile(t, path)
	cli := newFile(t, path)
	wantInvalid(t, gateway, "alice", "password1")
	if err := cli.Add("alice", []byte("password1"), false); err != nil {
		t.Fatal(err)
	}
	wantIdentity(t, gateway, "alice", "password1", false)
	if err := cli.Remove("alice"); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, gateway, "alice", "password1")

	if err := cli.Add("bob", []byte("password2"), false); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "bob:superuser:"+mustHash(t, "password2")+"\n")
	_, err := gateway.Authenticate(context.Background(), "bob", "password2")
	if !errors.Is(err, auth.ErrUnavailable) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("broken file: %v, want ErrUnavailable naming line 1", err)
	}
	if _, err := gateway.List(); err == nil {
		t.Error("List of a broken file succeeded")
	}
	if err := cli.Add("carol", []byte("password3"), false); err == nil {
		t.Error("Add to a broken file succeeded")
	}
	writeFile(t, path, "bob:user:"+mustHash(t, "password2")+"\n")
	wantIdentity(t, gateway, "bob", "password2", false)

	os.Remove(path)
	wantInvalid(t, gateway, "bob", "password2")
}

// TestConcurrentWriters: several Files (and, below, several processes)
// adding users at once lose none of them.
func TestConcurrentWriters(t *testing.T) {
	path := usersPath(t)
	files := []*File{newFile(t, path), newFile(t, path), newFile(t, path)}
	var wg sync.WaitGroup
	for i, f := range files {
		for j := range 8 {
			wg.Go(func() {
				if err := f.Add(fmt.Sprintf("u%d-%d", i, j), []byte("password1"), false); err != nil {
					t.Error(err)
				}
			})
		}
	}
	// Meanwhile, logins keep working.
	wg.Go(func() {
		for range 20 {
			if _, err := files[0].Authenticate(context.Background(), "u1-1", "password1"); err != nil && !errors.Is(err, auth.ErrInvalid) {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	users, err := newFile(t, path).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 24 {
		t.Errorf("%d users after 24 concurrent adds: %v", len(users), users)
	}
}

const helperEnv = "AIRLOCK_LOCAL_TEST_WRITER"

// helperWriter is a child process of TestCrossProcessWriters: spec is
// "PATH PREFIX"; it adds 10 users named PREFIX-N.
func helperWriter(spec string) int {
	path, prefix, _ := strings.Cut(spec, " ")
	f, err := New(Config{Path: path, Params: testParams, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range 10 {
		if err := f.Add(fmt.Sprintf("%s-%d", prefix, i), []byte("password1"), false); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

func TestCrossProcessWriters(t *testing.T) {
	path := usersPath(t)
	var cmds []*exec.Cmd
	for _, p := range []string{"p", "q", "r"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path+" "+p)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if err := helperWriter(path + " s"); err != 0 {
		t.Error("in-process writer failed")
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("writer process: %v", err)
		}
	}
	users, err := newFile(t, path).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 40 {
		t.Errorf("%d users after 4 processes added 10 each", len(users))
	}
}

// TestUnknownUserCostsAHash: an unknown user costs the same one password
// check as a known user with a wrong password, so response time does not
// reveal which names exist. Counted, not timed: timings on a shared
// machine prove nothing.
func TestUnknownUserCostsAHash(t *testing.T) {
	f := newFile(t, usersPath(t))
	if err := f.Add("alice", []byte("password1"), false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, password string
		hashes         int64
	}{
		{"alice", "password1", 1},
		{"alice", "wrong-password", 1},
		{"nobody", "password1", 1},
		{"nobody", "wrong-password", 1},
		// No user can have these, for any name: nothing to hide.
		{"Not Valid", "password1", 0},
		{"alice", "", 0},
		{"alice", strings.Repeat("x", MaxPasswordLen+1), 0},
	} {
		before := f.hashes.Load()
		f.Authenticate(context.Background(), tc.user, tc.password)
		if got := f.hashes.Load() - before; got != tc.hashes {
			t.Errorf("Authenticate(%q, %d-byte password) ran %d hashes, want %d", tc.user, len(tc.password), got, tc.hashes)
		}
	}
	// And the dummy costs what a real hash costs: same parameters.
	if d := f.dummy.(*argon2Hash); d.p != testParams || len(d.key) != keyLen || len(d.salt) != saltLen {
		t.Errorf("dummy hash %+v differs from new hashes", d.p)
	}
}

func TestContextWhileWaitingForAHashSlot(t *testing.T) {
	f, err := New(Config{Path: usersPath(t), Params: testParams, MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.sem <- struct{}{} // the one slot is busy
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.Authenticate(ctx, "alice", "password1")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	<-f.sem
}

// TestDefaultParams checks the documented parameters and that a real
// default hash works end to end.
func TestDefaultParams(t *testing.T) {
	f, err := Open(usersPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Add("alice", []byte("password1"), false); err != nil {
		t.Fatal(err)
	}
	wantIdentity(t, f, "alice", "password1", false)
	data, _ := os.ReadFile(f.cfg.Path)
	if !strings.HasPrefix(string(data), "alice:user:$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("file: %s", data)
	}
}

func TestPasswordsNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	path := usersPath(t)
	f, err := New(Config{Path: path, Params: testParams, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-Passw0rd"
	f.Add("alice", []byte(secret), false)
	f.Authenticate(context.Background(), "alice", secret)
	f.Authenticate(context.Background(), "alice", secret+"x")
	writeFile(t, path, "alice:user:"+mustHash(t, secret)+"\n") // reload, logged
	f.Authenticate(context.Background(), "alice", secret)
	writeFile(t, path, "broken "+secret+"\n") // error, logged
	f.Authenticate(context.Background(), "alice", secret)
	if logs.Len() == 0 {
		t.Fatal("nothing logged; the test proves nothing")
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("a password reached the log:\n%s", logs.String())
	}
}

// BenchmarkAuthenticate is one login's password check (argon2id with
// DefaultParams, the cost every local login and every unknown user pays),
// and an imported bcrypt hash of cost 10 (htpasswd -B's default is 5).
func BenchmarkAuthenticate(b *testing.B) {
	path := usersPath(b)
	f, err := New(Config{Path: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Add("alice", []byte("password1"), false); err != nil {
		b.Fatal(err)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("password1"), 10)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, append(data, "bob:user:"+string(h)+"\n"...), 0o600)
	ctx := context.Background()
	for _, bc := range []struct{ name, user string }{
		{"argon2id", "alice"}, {"unknown-user", "nobody"}, {"bcrypt-10", "bob"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Authenticate(ctx, bc.user, "password1")
			}
		})
	}
}
