package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/clientauth"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/runner"
)

// attachAnswer is the gateway's answer to an adoption (POST
// /api/v1/sessions with slurm_job).
type attachAnswer struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// Ways are the ways into the session the gateway offers its owner
	// (desktop, console, rdp, app), each a place on the session's page.
	Ways []struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	} `json:"ways"`
	Runner struct {
		Spec json.RawMessage   `json:"spec"`
		Env  map[string]string `json:"env"`
	} `json:"runner"`
}

// cmdAttach runs inside a Slurm job the user submitted themselves (an Open
// OnDemand session's): it asks the gateway to adopt the job as a session
// of the profile, then runs that session's runner as a job the gateway
// submitted would, registering with the gateway. The token is the user's
// (airlock login, or AIRLOCK_TOKEN), never on the command line.
func cmdAttach(ctx context.Context, env *Env, args []string) int {
	fs := newFlags(env, "attach", "--profile NAME [--gateway URL] [--url-file FILE] [--ways-file FILE]")
	profile := fs.String("profile", "", "the gateway's profile to run in this job. Required.")
	gw := fs.String("gateway", "", "the gateway's https:// URL (default: the one airlock login kept, or AIRLOCK_GATEWAY)")
	ca := fs.String("ca", "", "PEM file of the CA that signed the gateway's certificate (default: the one airlock login kept, or AIRLOCK_CA; else the system roots)")
	retryFor := fs.Duration("retry-for", 2*time.Minute, "how long to keep asking a gateway that cannot be reached or answers 502, 503 or 504 (restarting); a refusal ends attach at once")
	urlFile := fs.String("url-file", "", "write the session's URL on the gateway to FILE (mode 0600) once the gateway has adopted the job")
	waysFile := fs.String("ways-file", "", "write the session's ways in to FILE (mode 0600), one \"NAME URL\" a line (desktop, console, rdp, app), once the gateway has adopted the job: what an OnDemand card links to")
	mkLog := logFlags(fs)
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *profile == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	log, err := mkLog(env.Stderr)
	if err != nil {
		return fail(env, "%v", err)
	}
	jobID := os.Getenv("SLURM_JOB_ID")
	if jobID == "" {
		return fail(env, "SLURM_JOB_ID is not set: airlock attach runs inside a Slurm job")
	}
	creds, err := clientauth.Load()
	if *gw != "" {
		creds.Gateway = strings.TrimSuffix(*gw, "/")
	}
	if *ca != "" {
		creds.CAFile = *ca
	}
	if err != nil && (!errors.Is(err, clientauth.ErrNoLogin) || creds.Token == "" || creds.Gateway == "") {
		return fail(env, "%v", err)
	}
	// The token is the user's password for the API: out of the
	// environment the session's processes inherit.
	os.Unsetenv("AIRLOCK_TOKEN")
	if !strings.HasPrefix(creds.Gateway, "https://") {
		return fail(env, "gateway %q: want an https:// URL", creds.Gateway)
	}
	tlsConf, err := creds.TLS()
	if err != nil {
		return fail(env, "%v", err)
	}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	ans, err := adoptRetrying(ctx, hc, creds.Gateway, creds.Token, *profile, jobID, *retryFor, log)
	if err != nil {
		return fail(env, "%v", err)
	}
	spec, err := runner.ParseSpec(bytes.NewReader(ans.Runner.Spec))
	if err != nil {
		return fail(env, "the gateway's spec: %v", err)
	}
	if spec.ID != ans.ID {
		return fail(env, "the gateway's spec is for session %q, not %q", spec.ID, ans.ID)
	}
	// The session runs as the user, who can read their own login file:
	// its workload must not, or it could act as them on the gateway.
	if p, err := clientauth.Path(); err == nil {
		spec.Hide = append(spec.Hide, filepath.Clean(p))
	}
	// What a submitted job gets in its environment; the runner reads and
	// unsets it.
	for k, v := range ans.Runner.Env {
		os.Setenv(k, v)
	}
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(ans.URL+"\n"), 0o600); err != nil {
			return fail(env, "url file: %v", err)
		}
	}
	if *waysFile != "" {
		if err := os.WriteFile(*waysFile, []byte(waysLines(ans)), 0o600); err != nil {
			return fail(env, "ways file: %v", err)
		}
	}
	fmt.Fprintf(env.Stderr, "airlock: Slurm job %s is session %s: %s\n", jobID, ans.ID, ans.URL)
	cfg := runner.Config{Spec: spec, Stdout: env.Stdout, Stderr: env.Stderr, Logger: log,
		LogFormat: fs.Lookup("log-format").Value.String()}
	if cfg.Register, err = registration.FromEnv(spec.ID); err != nil {
		return fail(env, "%v", err)
	}
	return runner.Run(ctx, cfg)
}

// waysLines is the ways-file: "NAME URL" lines, keeping only ways whose
// name is a plain word and whose URL is a place on the session's own page
// (the shell that reads the file and the card that shows it trust no
// more than that).
func waysLines(ans *attachAnswer) string {
	var b strings.Builder
	for _, w := range ans.Ways {
		if w.Name == "" || strings.Trim(w.Name, "abcdefghijklmnopqrstuvwxyz") != "" {
			continue
		}
		if w.URL != ans.URL && !strings.HasPrefix(w.URL, ans.URL+"#") {
			continue
		}
		if strings.ContainsAny(w.URL, " \t\r\n\"'<>\\`$") {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", w.Name, w.URL)
	}
	return b.String()
}

// errRetry marks an answer worth asking again: no answer, or a gateway (or
// its proxy) that says it is unavailable.
var errRetry = errors.New("the gateway is unavailable")

// adoptRetrying is adopt, asked again (with a growing pause) while the
// gateway cannot answer, for up to retryFor: a gateway restart must not
// end an OnDemand session that was about to start.
func adoptRetrying(ctx context.Context, hc *http.Client, gateway, token, profile, jobID string, retryFor time.Duration, log *slog.Logger) (*attachAnswer, error) {
	deadline := time.Now().Add(retryFor)
	pause := 500 * time.Millisecond
	for {
		ans, err := adopt(ctx, hc, gateway, token, profile, jobID)
		if err == nil || !errors.Is(err, errRetry) || time.Now().Add(pause).After(deadline) {
			return ans, err
		}
		log.Warn("asking the gateway again", "error", err, "in", pause)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("attach: %w", ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// adopt asks the gateway to adopt Slurm job jobID as a session of profile.
func adopt(ctx context.Context, hc *http.Client, gateway, token, profile, jobID string) (*attachAnswer, error) {
	body, _ := json.Marshal(map[string]string{"profile": profile, "slurm_job": jobID})
	req, err := http.NewRequestWithContext(ctx, "POST", gateway+"/api/v1/sessions", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("attach: %w: %w", errRetry, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(b, &e)
		if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
			return nil, fmt.Errorf("attach: %w: %s", errRetry, resp.Status)
		}
		return nil, fmt.Errorf("attach: the gateway refused to adopt job %s: %s %s", jobID, resp.Status, cmp.Or(e.Error.Message, e.Message, strings.TrimSpace(string(b))))
	}
	var ans attachAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("attach: the gateway's answer: %w", err)
	}
	if ans.ID == "" || len(ans.Runner.Spec) == 0 || ans.Runner.Env[registration.EnvToken] == "" {
		return nil, fmt.Errorf("attach: the gateway's answer lacks the session, its spec or its registration")
	}
	return &ans, nil
}
