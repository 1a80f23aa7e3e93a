// Package cli turns airlock's command line into calls of the internal
// packages: one flag.FlagSet per subcommand, usage text that states
// defaults, and the table of hidden roles the binary re-executes itself
// as (the seal's init, the janitor). It holds no business logic.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "dev"

// command is one subcommand.
type command struct {
	name    string
	summary string
	hidden  bool
	// signals: the command handles SIGTERM/SIGINT itself (the runner counts
	// them; init forwards them), so Main must not install a handler.
	run func(ctx context.Context, env *Env, args []string) int
}

// Env is what a subcommand may touch of the process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

func commands() []command {
	return []command{
		{name: "run", summary: "run one sealed session from a JSON spec", run: cmdRun},
		{name: "connector", summary: "serve one connector on an inherited listener (started by run)", run: cmdConnector},
		{name: "ticket", summary: "print a signed ticket for a session's connector", run: cmdTicket},
		{name: "serve", summary: "run the gateway: portal, API, authentication, sessions", run: cmdServe},
		{name: "users", summary: "add, list, remove users of the local password file, set their role", run: cmdUsers},
		{name: "config", summary: "check airlock.yaml, or print the commented defaults", run: cmdConfig},
		{name: "images", summary: "list the VM images of airlock.yaml and check each file", run: cmdImages},
		{name: "vm", summary: "admin: a VM session's power button, reset or screen dump", run: cmdVM},
		{name: "forward", summary: "publish a web app of this node on the gateway through an outbound tunnel", run: cmdForward},
		{name: "rdp", summary: "open a session in your RDP client (an .airlock file, or a session id after login)", run: cmdRDP},
		{name: "attach", summary: "inside a Slurm job of yours (an Open OnDemand session): have the gateway adopt it and run the profile's session in it", run: cmdAttach},
		{name: "login", summary: "log in to a gateway and keep a token for airlock forward and airlock rdp SESSION (or use AIRLOCK_TOKEN)", run: cmdLogin},
		{name: "version", summary: "print the version", run: cmdVersion},
		{name: sealInitRole, hidden: true, run: cmdSealInit},
		{name: janitorRole, hidden: true, run: cmdJanitor},
		{name: kioskWMRole, hidden: true, run: cmdKioskWM},
	}
}

func lookup(name string) (command, bool) {
	seen := map[string]bool{}
	var found command
	ok := false
	for _, c := range commands() {
		if seen[c.name] {
			panic("cli: duplicate command " + c.name)
		}
		seen[c.name] = true
		if c.name == name {
			found, ok = c, true
		}
	}
	return found, ok
}

// Main runs the subcommand named by args[0] and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "airlock: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return c.run(ctx, env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: airlock COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		if !c.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nRun 'airlock COMMAND -h' for a command's flags.")
}

// newFlags makes a FlagSet that reports errors instead of exiting.
func newFlags(env *Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: airlock %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and reports 0 (help asked), 2 (bad flags) or -1 (go on).
func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	return -1
}

// logFlags adds --log-format and --log-level and returns a constructor.
func logFlags(fs *flag.FlagSet) func(w io.Writer) (*slog.Logger, error) {
	format := fs.String("log-format", "text", "log format on stderr: text or json")
	level := fs.String("log-level", "info", "least severe level logged: debug, info, warn or error")
	return func(w io.Writer) (*slog.Logger, error) {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
		}
		opts := &slog.HandlerOptions{Level: lv}
		switch strings.ToLower(*format) {
		case "text":
			return slog.New(slog.NewTextHandler(w, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(w, opts)), nil
		}
		return nil, fmt.Errorf("--log-format %q: want text or json", *format)
	}
}

func cmdVersion(_ context.Context, env *Env, args []string) int {
	fmt.Fprintln(env.Stdout, "airlock", Version)
	return 0
}

func fail(env *Env, format string, args ...any) int {
	fmt.Fprintf(env.Stderr, "airlock: "+format+"\n", args...)
	return 1
}

// readFile reads a small file, naming the flag in errors.
func readFile(flagName, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagName, err)
	}
	return b, nil
}
