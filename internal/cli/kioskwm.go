package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/airlock-hpc/airlock/internal/kioskwm"
)

// kioskWMRole is the hidden subcommand a kiosk session runs in its seal:
// the window manager that keeps the browser the only window, and starts
// it (see internal/kioskwm).
const kioskWMRole = "kiosk-wm"

func cmdKioskWM(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet(kioskWMRole, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	display := fs.String("display", ":1", "the X display")
	// Firefox will not start on a --profile directory that does not
	// exist (Chromium makes its own); the seal's /tmp starts empty.
	var mkdirs []string
	fs.Func("mkdir", "a directory to make (mode 0700) before the browser starts; repeatable", func(s string) error {
		if !filepath.IsAbs(s) {
			return fmt.Errorf("%q is not an absolute path", s)
		}
		mkdirs = append(mkdirs, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, nil)).With("component", kioskWMRole)
	for _, d := range mkdirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			fmt.Fprintf(env.Stderr, "airlock %s: %v\n", kioskWMRole, err)
			return 1
		}
	}
	code, err := kioskwm.Run(ctx, *display, fs.Args(), os.Environ(), log)
	if err != nil {
		fmt.Fprintf(env.Stderr, "airlock %s: %v\n", kioskWMRole, err)
	}
	return code
}
