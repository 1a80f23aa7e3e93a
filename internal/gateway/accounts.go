package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// templateUser is what a portal user name must look like to be put into a
// run_as template: a name useradd and every tool accept, so that distinct
// portal users always get distinct accounts (nothing is rewritten).
var templateUser = regexp.MustCompile(`^[a-z0-9_][a-z0-9_.-]*$`)

// maxAccountName is the longest account name useradd makes.
const maxAccountName = 32

// accountsShared reports whether portal users share one Unix account (a
// gateway without root, or a run_as without {user}). Such a gateway
// cannot tell one user's Slurm job from another's, so it adopts none.
func (g *Gateway) accountsShared() bool {
	return os.Geteuid() != 0 || (g.cfg.RunAs != "" && !strings.Contains(g.cfg.RunAs, "{user}"))
}

// accountName is the Unix account portal user runs sessions as: "" (the
// gateway's own) without root; with root, the user's own account, or
// cfg.RunAs with {user} replaced by the user's name. An error is a 403
// saying why the user cannot have one.
func (g *Gateway) accountName(portalUser string) (string, error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	if g.cfg.RunAs == "" {
		return portalUser, nil
	}
	if !strings.Contains(g.cfg.RunAs, "{user}") {
		return g.cfg.RunAs, nil
	}
	name := strings.ReplaceAll(g.cfg.RunAs, "{user}", portalUser)
	if !templateUser.MatchString(portalUser) || len(name) > maxAccountName {
		return "", apiErr(403, "no_account", fmt.Sprintf(
			"the user name %q cannot become a Unix account here (%s): it must be lower-case letters, digits, _ . - and at most %d characters in all; ask an admin for another name",
			portalUser, g.cfg.RunAs, maxAccountName))
	}
	return name, nil
}

// DemoRunAs is the run_as of the embedded demo run as root: its portal
// users are not Unix accounts, sessions never run as root, and no two
// portal users share an account.
const DemoRunAs = "airlock-u-{user}"

// DemoHomes is where the demo's accounts' homes go: not in the state
// directory, which every session's seal hides.
const DemoHomes = "/var/lib/airlock/home"

// UseDemoAccounts sets cfg up as the embedded demo run as root does: each
// portal user's sessions run as airlock-u-NAME, made on their first launch.
func UseDemoAccounts(cfg *Config) {
	homes := DemoHomes
	if rel, err := filepath.Rel(cfg.StateDir, homes); err == nil && !strings.HasPrefix(rel, "..") {
		homes = filepath.Clean(cfg.StateDir) + "-homes"
	}
	cfg.RunAs = DemoRunAs
	cfg.MakeAccount = (&AccountMaker{Homes: homes}).Ensure
}

// AccountMaker makes, on first use, the Unix account a portal user's
// sessions run as (the embedded demo as root: its users are not Unix
// accounts). Accounts are system accounts with no login shell and a
// private home under Homes.
type AccountMaker struct {
	// Homes is the directory the homes go in (made 0755 if missing).
	Homes string

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Ensure makes account name unless it exists. Two first launches of one
// new user wait for each other instead of racing useradd.
func (m *AccountMaker) Ensure(ctx context.Context, name string) error {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*sync.Mutex{}
	}
	l := m.locks[name]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	m.mu.Unlock()
	l.Lock()
	defer l.Unlock()

	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	if err := os.MkdirAll(m.Homes, 0o755); err != nil {
		return fmt.Errorf("make account %s: %w", name, err)
	}
	home := filepath.Join(m.Homes, name)
	// No login shell: a session could otherwise put a key in its own
	// ~/.ssh and log in outside the seal.
	cmd := exec.CommandContext(ctx, "useradd", "--system", "--user-group", "--shell", "/usr/sbin/nologin",
		"--home-dir", home, "--create-home", "--comment", "airlock session account", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		// 9: the name exists (another gateway, or an admin, was quicker).
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 9 {
			return fmt.Errorf("make account %s: useradd: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
	}
	if _, err := user.Lookup(name); err != nil {
		return fmt.Errorf("make account %s: %w", name, err)
	}
	// Private: another portal user's session must not read this one's files.
	if err := os.Chmod(home, 0o700); err != nil {
		return fmt.Errorf("make account %s: %w", name, err)
	}
	return nil
}
