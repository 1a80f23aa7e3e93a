package rdpclient

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"

	"github.com/airlock-hpc/airlock/internal/rdpfile"
)

// CmdRDP is `airlock rdp FILE.airlock | SESSION`: it opens a loopback port
// tunnelled to the session's RDP server and starts the local RDP client on
// it, until the client exits or Ctrl-C. Failures are one plain sentence on
// stderr and exit code 1.
func CmdRDP(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rdp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noLaunch := fs.Bool("no-launch", false, "only print the local address; do not start an RDP client")
	listen := fs.String("listen", "127.0.0.1:0", "the local address to listen on (loopback)")
	verbose := fs.Bool("v", false, "log each connection")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: airlock rdp [flags] FILE.airlock | SESSION\n\nWith a SESSION id, fetches a fresh certificate with the token `airlock login` stored.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	say := func(err error) int {
		fmt.Fprintln(stderr, "airlock rdp:", err)
		return 1
	}
	f, err := loadTarget(ctx, fs.Arg(0))
	if err != nil {
		return say(err)
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	t, err := New(f, log)
	if err != nil {
		return say(err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	// One connection first, so that a bad file, a wrong gateway or a
	// stopped session is said now, not after the RDP client opened.
	probe, err := t.Dial(ctx)
	if err != nil {
		return say(err)
	}
	probe.Close()
	if h, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(h).IsLoopback() {
		return say(fmt.Errorf("--listen %s: want a loopback address (the tunnel is yours alone)", *listen))
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return say(fmt.Errorf("cannot listen on %s: %w", *listen, err))
	}
	addr := ln.Addr().String()
	errs := make(chan error, 1)
	served := make(chan error, 1)
	go func() { served <- t.Serve(ctx, ln, errs) }()
	defer func() { stop(); <-served }()

	if *noLaunch {
		fmt.Fprintf(stdout, "session %s: point your RDP client at %s (Ctrl-C ends)\n", f.Session, addr)
		select {
		case <-ctx.Done():
			return 0
		case err := <-served:
			if err != nil {
				return say(err)
			}
			return 0
		}
	}
	dir, err := os.MkdirTemp("", "airlock-rdp-")
	if err != nil {
		return say(err)
	}
	defer os.RemoveAll(dir)
	rdpPath := filepath.Join(dir, f.Session+".rdp")
	l, err := FindLauncher(runtime.GOOS, addr, f.User, f.Password, rdpPath, exec.LookPath)
	if err != nil {
		return say(fmt.Errorf("no RDP client found (install FreeRDP or Remmina), or use --no-launch and point yours at %s", addr))
	}
	cmd, err := l.Command(rdpPath)
	if err != nil {
		return say(err)
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return say(fmt.Errorf("cannot start %s: %w", l.Argv[0], err))
	}
	fmt.Fprintf(stdout, "session %s: %s started on %s\n", f.Session, filepath.Base(l.Argv[0]), addr)
	if f.Password != "" && !l.PasswordGiven {
		fmt.Fprintf(stdout, "session %s: %s cannot be given the guest's password; type the one on the session page\n", f.Session, filepath.Base(l.Argv[0]))
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-ctx.Done():
		cmd.Process.Signal(os.Interrupt)
		<-waited
	}
	select {
	case err := <-errs:
		return say(err)
	default:
	}
	return 0
}

// loadTarget reads an .airlock file, or fetches one for a session id with
// the stored login.
func loadTarget(ctx context.Context, arg string) (*rdpfile.File, error) {
	b, err := os.ReadFile(arg)
	if err == nil {
		return rdpfile.Parse(b)
	}
	if !errors.Is(err, os.ErrNotExist) || filepath.Ext(arg) == ".airlock" {
		return nil, fmt.Errorf("cannot read %s: %w", arg, err)
	}
	return fetchFile(ctx, arg)
}
