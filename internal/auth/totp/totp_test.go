package totp

import (
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	k, err := Generate("airlock", "alice")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_015, 0)
	cur := Step(now)
	for _, tc := range []struct {
		name   string
		step   int64
		after  int64
		ok     bool
		wantAt int64
	}{
		{"now", cur, 0, true, cur},
		{"one step back", cur - 1, 0, true, cur - 1},
		{"one step ahead", cur + 1, 0, true, cur + 1},
		{"two steps back", cur - 2, 0, false, 0},
		{"two steps ahead", cur + 2, 0, false, 0},
		{"used step", cur, cur, false, 0},
		{"earlier than used", cur - 1, cur, false, 0},
		{"after the used one", cur + 1, cur, true, cur + 1},
	} {
		code, err := Code(k.Secret, tc.step)
		if err != nil {
			t.Fatal(err)
		}
		step, ok, err := Check(k.Secret, code, now, tc.after)
		if err != nil || ok != tc.ok || step != tc.wantAt {
			t.Errorf("%s: Check = %d, %v, %v; want %d, %v", tc.name, step, ok, err, tc.wantAt, tc.ok)
		}
	}
	other, _ := Generate("airlock", "bob")
	code, _ := Code(other.Secret, cur)
	if _, ok, _ := Check(k.Secret, code, now, 0); ok {
		// One chance in a million of a collision; the keys are random.
		t.Errorf("another secret's code accepted")
	}
	for _, bad := range []string{"", "12345", "1234567", "12345a", "١٢٣٤٥٦"} {
		if _, ok, err := Check(k.Secret, bad, now, 0); ok || err != nil {
			t.Errorf("Check(%q) = %v, %v", bad, ok, err)
		}
	}
}

func TestParseCode(t *testing.T) {
	for in, want := range map[string]string{"123456": "123456", "123 456": "123456", "123-456": "123456", " 123456 ": "123456"} {
		if got, err := ParseCode(in); err != nil || got != want {
			t.Errorf("ParseCode(%q) = %q, %v", in, got, err)
		}
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes := NewRecoveryCodes(RecoveryCount)
	seen := map[string]bool{}
	for _, c := range codes {
		p, ok := ParseRecovery(strings.ToUpper(strings.ReplaceAll(c, "-", " ")))
		if !ok || p != c {
			t.Errorf("ParseRecovery(%q) = %q, %v", c, p, ok)
		}
		if seen[c] {
			t.Errorf("code %s twice", c)
		}
		seen[c] = true
	}
	if bytes.Equal(RecoveryHash("alice", codes[0]), RecoveryHash("bob", codes[0])) {
		t.Errorf("recovery hash does not depend on the user")
	}
	for _, bad := range []string{"", "abcde-fghj", "abcde-fghjkm", "abcdi-fghjk", "abcde_fghjk"} {
		if _, ok := ParseRecovery(bad); ok {
			t.Errorf("ParseRecovery(%q) accepted", bad)
		}
	}
}

func TestSeal(t *testing.T) {
	var key, other [32]byte
	other[0] = 1
	s, err := Seal(key, "alice", "JBSWY3DPEHPK3PXP")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("JBSWY3DPEHPK3PXP")) {
		t.Fatalf("sealed secret holds the secret")
	}
	if got, err := Open(key, "alice", s); err != nil || got != "JBSWY3DPEHPK3PXP" {
		t.Errorf("Open = %q, %v", got, err)
	}
	if _, err := Open(key, "bob", s); err == nil {
		t.Errorf("alice's sealed secret opened as bob's")
	}
	if _, err := Open(other, "alice", s); err == nil {
		t.Errorf("opened with another key")
	}
	if _, err := Open(key, "alice", s[:5]); err == nil {
		t.Errorf("opened a truncated secret")
	}
}

func TestQRPNG(t *testing.T) {
	k, _ := Generate("airlock", "alice")
	b, err := QRPNG(k.URL, 200)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 200 {
		t.Fatalf("QR PNG: %v", err)
	}
	u, err := URL("airlock", "alice", k.Secret)
	if err != nil || !strings.Contains(u, "secret="+k.Secret) {
		t.Errorf("URL = %q, %v", u, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"123456", "123 456", "abcde-fghjk", "ABCDE FGHJK", "", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := ParseCode(s); err == nil {
			if len(c) != 6 || strings.Trim(c, "0123456789") != "" {
				t.Errorf("ParseCode(%q) = %q", s, c)
			}
		}
		if c, ok := ParseRecovery(s); ok {
			if again, ok := ParseRecovery(c); !ok || again != c || len(c) != 11 {
				t.Errorf("ParseRecovery(%q) = %q, not stable", s, c)
			}
		}
	})
}

// BenchmarkCheck: checking a code (three HMACs, for the steps within the
// skew) — the second step's own CPU cost.
func BenchmarkCheck(b *testing.B) {
	k, _ := Generate("airlock", "alice")
	now := time.Now()
	code, _ := Code(k.Secret, Step(now))
	for b.Loop() {
		if _, ok, _ := Check(k.Secret, code, now, 0); !ok {
			b.Fatal("code refused")
		}
	}
}

// TestOtherImplementations: zbarimg (ZBar) reads the QR code back to the
// exact otpauth URL, and oathtool (OATH Toolkit) computes the same codes.
func TestOtherImplementations(t *testing.T) {
	for _, tool := range []string{"zbarimg", "oathtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing (scripts/install-deps.sh installs it)", tool)
		}
	}
	k, _ := Generate("airlock", "alice@example.org")
	b, _ := QRPNG(k.URL, 200)
	f := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zbarimg", "-q", "--raw", f).Output()
	if err != nil || strings.TrimSpace(string(out)) != k.URL {
		t.Fatalf("zbarimg: %q, %v; want %q", out, err, k.URL)
	}
	now := time.Unix(1_900_000_000, 0)
	out, err = exec.Command("oathtool", "--totp", "-b", "--now", now.UTC().Format("2006-01-02 15:04:05 UTC"), k.Secret).Output()
	want, _ := Code(k.Secret, Step(now))
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("oathtool: %q, %v; want %s", out, err, want)
	}
}
