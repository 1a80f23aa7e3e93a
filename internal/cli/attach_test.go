package cli

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAttachRefusals: attach outside a Slurm job says so; a gateway that
// answers 503 is asked again; a refusal is final and reaches the user
// with the gateway's words and the job id; the request carries the token
// only in its Authorization header and the job id and profile in its
// body; no token is printed.
func TestAttachRefusals(t *testing.T) {
	t.Setenv("AIRLOCK_CONFIG_DIR", t.TempDir())
	t.Setenv("SLURM_JOB_ID", "")
	t.Setenv("AIRLOCK_TOKEN", "alk_secret-token")
	if code, _, stderr := runCLI(t, "", "attach", "--profile", "desktop", "--gateway", "https://127.0.0.1:1"); code != 1 || !strings.Contains(stderr, "SLURM_JOB_ID is not set") {
		t.Errorf("outside a job: %d %q", code, stderr)
	}
	var got struct {
		auth, path string
		body       map[string]string
	}
	calls := 0
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A gateway restarting behind its proxy first, then a refusal.
		if calls++; calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got.auth, got.path = r.Header.Get("Authorization"), r.URL.String()
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &got.body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(403)
		io.WriteString(w, `{"code":"not_your_job","message":"Slurm job 42 is not yours"}`)
	}))
	defer ts.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600)
	t.Setenv("SLURM_JOB_ID", "42")
	t.Setenv("AIRLOCK_TOKEN", "alk_secret-token")
	code, stdout, stderr := runCLI(t, "", "attach", "--profile", "desktop", "--gateway", ts.URL, "--ca", ca)
	if code != 1 || !strings.Contains(stderr, "job 42") || !strings.Contains(stderr, "Slurm job 42 is not yours") {
		t.Errorf("refused: %d %q", code, stderr)
	}
	if calls != 2 {
		t.Errorf("%d requests, want 2: one answered 503, asked again, refused, not asked again", calls)
	}
	if strings.Contains(stdout+stderr, "secret-token") {
		t.Errorf("the token was printed: %q %q", stdout, stderr)
	}
	if got.auth != "Bearer alk_secret-token" || got.path != "/api/v1/sessions" || got.body["slurm_job"] != "42" || got.body["profile"] != "desktop" {
		t.Errorf("the request: %+v", got)
	}
	if os.Getenv("AIRLOCK_TOKEN") != "" {
		t.Errorf("AIRLOCK_TOKEN stays in the environment the session inherits")
	}
}
