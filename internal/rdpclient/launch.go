package rdpclient

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// RDPFile is a .rdp connection file for a client that reads one (mstsc,
// the Windows App, Remmina), pointed at the tunnel's loopback address.
// A password goes in only where the platform can seal it for the user
// (Windows: DPAPI, as mstsc's "password 51:b:" expects); elsewhere no
// client reads a password from an .rdp file.
func RDPFile(addr, user, password string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "full address:s:%s\r\n", addr)
	if user != "" {
		fmt.Fprintf(&b, "username:s:%s\r\n", user)
	}
	if password != "" {
		if blob, err := sealPassword(password); err == nil {
			fmt.Fprintf(&b, "password 51:b:%s\r\n", blob)
		}
	}
	// The tunnel, not the RDP server's own certificate, is what proves
	// whom the client talks to (the pin in the .airlock file); the server
	// behind it has a certificate nobody can check.
	b.WriteString("authentication level:i:0\r\n")
	b.WriteString("prompt for credentials:i:0\r\n")
	b.WriteString("screen mode id:i:1\r\n")
	return []byte(b.String())
}

// Launcher is how the local RDP client is started.
type Launcher struct {
	// Argv is the command (the client and its arguments).
	Argv []string
	// RDPFile is written to a temporary file named in Argv, if set.
	RDPFile []byte
	// Stdin is what the client reads on its standard input: FreeRDP's
	// password with /from-stdin, never on its command line, which every
	// local user can read.
	Stdin []byte
	// PasswordGiven says the client gets the session's password (in
	// Stdin or RDPFile); otherwise the user types it from the session page.
	PasswordGiven bool
}

// ErrNoClient is returned when no RDP client is installed.
var ErrNoClient = errors.New("no RDP client found")

// FindLauncher picks the platform's RDP client: xfreerdp (wlfreerdp under
// Wayland) or Remmina on Linux and other Unix systems, mstsc on Windows,
// the Windows App (formerly Microsoft Remote Desktop) on macOS. rdpPath is
// where the .rdp file will be written.
func FindLauncher(goos, addr, user, password, rdpPath string, lookPath func(string) (string, error)) (Launcher, error) {
	file := RDPFile(addr, user, password)
	switch goos {
	case "windows":
		return Launcher{Argv: []string{"mstsc", rdpPath}, RDPFile: file, PasswordGiven: bytes.Contains(file, []byte("password 51:b:"))}, nil
	case "darwin":
		// open -W waits until the app quits; -a names it. The Windows App
		// registers itself for .rdp files, so plain open works too.
		return Launcher{Argv: []string{"open", "-W", rdpPath}, RDPFile: file}, nil
	}
	freerdp := []string{"xfreerdp", "xfreerdp3", "sdl-freerdp"}
	if os.Getenv("WAYLAND_DISPLAY") != "" && os.Getenv("DISPLAY") == "" {
		freerdp = append([]string{"wlfreerdp", "wlfreerdp3"}, freerdp...)
	}
	for _, c := range freerdp {
		if p, err := lookPath(c); err == nil {
			argv := []string{p, "/v:" + addr, "/cert:ignore", "/log-level:WARN"}
			if user != "" && password != "" {
				// /from-stdin:force: FreeRDP asks for what /u and /p do
				// not give (here the password alone) on its standard
				// input, before it connects.
				argv = append(argv, "/u:"+user, "/from-stdin:force")
				return Launcher{Argv: argv, Stdin: []byte(password + "\n"), PasswordGiven: true}, nil
			}
			if user != "" {
				// With a user name and a (any) password FreeRDP asks for an
				// automatic logon, which xrdp's autorun needs to skip its
				// login dialog; xrdp checks no password (the seal's Xvnc
				// is its only target) and a Windows guest asks for its own.
				argv = append(argv, "/u:"+user, "/p:")
			}
			return Launcher{Argv: argv}, nil
		}
	}
	if p, err := lookPath("remmina"); err == nil {
		return Launcher{Argv: []string{p, "-c", rdpPath}, RDPFile: file}, nil
	}
	return Launcher{}, ErrNoClient
}

// Command prepares the launcher's process, writing its .rdp file first
// (0600, in a private temporary directory the caller removes).
func (l Launcher) Command(rdpPath string) (*exec.Cmd, error) {
	if l.RDPFile != nil {
		if err := os.MkdirAll(filepath.Dir(rdpPath), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(rdpPath, l.RDPFile, 0o600); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(l.Argv[0], l.Argv[1:]...)
	if runtime.GOOS != "windows" {
		cmd.Stdin = nil
	}
	if l.Stdin != nil {
		cmd.Stdin = bytes.NewReader(l.Stdin)
	}
	return cmd, nil
}
