package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/runner"
	"github.com/airlock-hpc/airlock/internal/seal"
)

const (
	sealInitRole = seal.InitRole
	janitorRole  = runner.JanitorRole
)

func cmdRun(ctx context.Context, env *Env, args []string) int {
	fs := newFlags(env, "run", "--spec FILE|-")
	specPath := fs.String("spec", "", "session spec (JSON) to run; - reads it from stdin. Required.")
	outlive := fs.Bool("outlive-parent", false, "keep the session running if the process that started the runner exits (the local backend uses it so a gateway restart ends no session); by default the runner's parent dying ends the session")
	register := fs.Bool("register", false, "report ready and exit to the gateway over HTTPS, as a runner in a batch job does; the gateway's URL, certificate pin and the session's one-time token come from $"+registration.EnvURL+", $"+registration.EnvSHA256+" and $"+registration.EnvToken+", never from the command line")
	mkLog := logFlags(fs)
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *specPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	log, err := mkLog(env.Stderr)
	if err != nil {
		return fail(env, "%v", err)
	}
	var r io.Reader = env.Stdin
	if *specPath != "-" {
		f, err := os.Open(*specPath)
		if err != nil {
			return fail(env, "open spec: %v", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, 2<<20))
	if err != nil {
		return fail(env, "read spec: %v", err)
	}
	spec, err := runner.ParseSpec(bytes.NewReader(data))
	if err != nil {
		if *register {
			reportBadSpec(ctx, data, err)
		}
		return fail(env, "%s: %v", *specPath, err)
	}
	cfg := runner.Config{Spec: spec, Stdout: env.Stdout, Stderr: env.Stderr, Logger: log,
		LogFormat: fs.Lookup("log-format").Value.String(), OutliveParent: *outlive}
	if *register {
		if cfg.Register, err = registration.FromEnv(spec.ID); err != nil {
			return fail(env, "%v", err)
		}
	}
	return runner.Run(ctx, cfg)
}

func cmdSealInit(_ context.Context, _ *Env, _ []string) int { return seal.RunInit() }

func cmdJanitor(_ context.Context, _ *Env, args []string) int { return runner.RunJanitor(args) }

// reportBadSpec tells the gateway why a batch job's runner could not start
// (the job's own log may go nowhere), when the spec at least names its
// session.
func reportBadSpec(ctx context.Context, data []byte, err error) {
	var named struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &named) != nil || named.ID == "" || strings.ContainsAny(named.ID, "/?#") {
		return
	}
	c, cerr := registration.FromEnv(named.ID)
	if cerr != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c.Send(ctx, registration.Registration{Event: "exit", Reason: "bad spec: " + err.Error(), Code: 1})
}
