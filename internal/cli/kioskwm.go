package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, nil)).With("component", kioskWMRole)
	code, err := kioskwm.Run(ctx, *display, fs.Args(), os.Environ(), log)
	if err != nil {
		fmt.Fprintf(env.Stderr, "airlock %s: %v\n", kioskWMRole, err)
	}
	return code
}
