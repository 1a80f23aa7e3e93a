package gateway

import (
	"os"
	"path/filepath"
	"regexp"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/session"
)

// A vm image with rdp_password: generate gives each session a one-time
// password for the guest's RDP account. It is derived from the master key
// and the session's id (which the store never gives twice), so the
// gateway keeps it nowhere and finds it again after a restart; it reaches
// the runner as a 0600 file in the session's directory (local backend) or
// in the job's environment (remote), the guest as an SMBIOS OEM string,
// and users only on the owner's session page and in the owner's .airlock
// file. It is never in a URL, a log line, the audit log or a command line.

// EnvRDPPassword carries the password to a remote runner.
const EnvRDPPassword = "AIRLOCK_RDP_PASSWORD"

var rdpUserRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// rdpPasswordLen is 20 characters of about 5.5 bits: over 100 bits.
const rdpPasswordLen = 20

// Alphabets without look-alikes (0 O 1 l I), for a password a user may
// have to type; one of each class in turn, so that Windows' complexity
// rule (three of upper, lower, digit, symbol) always holds.
var rdpPasswordClasses = [3]string{"ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz", "23456789"}

// rdpPassword is session s's one-time RDP password, or "" when its
// profile's image asks for none (or the gateway has no RDP port).
func (g *Gateway) rdpPassword(s *session.Session) string {
	p, ok := g.profile(s.Profile)
	if !ok {
		return ""
	}
	return g.rdpPasswordOf(p, s)
}

// rdpPasswordOf is rdpPassword for a session of profile p: a VM image's
// generated password, or a shadow desktop's (which always has one: its
// server does NLA).
func (g *Gateway) rdpPasswordOf(p Profile, s *session.Session) string {
	if p.Kind == "desktop" && p.RDP && p.RDPServer == RDPServerShadow && g.rdp != nil {
		return g.derivedRDPPassword(s)
	}
	return g.rdpPasswordFor(p.VM, s)
}

// rdpLogonUser is the account name a session's generated RDP password
// is for: the owner's name, when a guest or the SAM file can take it;
// else "" (a guest's image decides) or, for a shadow desktop's SAM
// file, "airlock".
func rdpLogonUser(p Profile, s *session.Session) string {
	switch {
	case rdpUserRE.MatchString(s.Owner):
		return s.Owner
	case p.Kind == "desktop":
		return "airlock"
	}
	return ""
}

// rdpPasswordFor is rdpPassword for a session of image img.
func (g *Gateway) rdpPasswordFor(img *VMImage, s *session.Session) string {
	if img == nil || !img.RDP || !img.RDPPassword || g.rdp == nil {
		return ""
	}
	return g.derivedRDPPassword(s)
}

// derivedRDPPassword is session s's one-time password, derived from the
// master key and its id.
func (g *Gateway) derivedRDPPassword(s *session.Session) string {
	k := derive(g.master, "airlock rdp password", s.ID)
	b := make([]byte, rdpPasswordLen)
	for i := range b {
		class := rdpPasswordClasses[i%3]
		// A byte modulo 24, 25 or 8: the bias is at most 1 in 10.
		b[i] = class[int(k[i])%len(class)]
	}
	return string(b)
}

// remoteJobFor is the environment of a remote session's job: remoteJob's,
// and the session's RDP password when it has one.
func (g *Gateway) remoteJobFor(s *session.Session, p Profile) map[string]string {
	env := g.remoteJob(s.ID)
	if pw := g.rdpPasswordOf(p, s); pw != "" {
		env[EnvRDPPassword] = pw
	}
	return env
}

// rdpPasswordSpec hands the session's password to its runner: a file
// next to the ticket key for the local backend, a job environment
// variable (added to env) for a remote one.
func (g *Gateway) rdpPasswordSpec(v *contract.VMSpec, img *VMImage, s *session.Session, dir string) error {
	pw := g.rdpPasswordFor(img, s)
	if pw == "" {
		return nil
	}
	if rdpUserRE.MatchString(s.Owner) {
		// The name the owner's client logs in with; a name the guest
		// could not take (an e-mail address) is left to the image.
		v.RDPUser = s.Owner
	}
	if g.remote != nil {
		v.RDPPasswordEnv = EnvRDPPassword
		return nil
	}
	p := filepath.Join(dir, "rdp.password")
	if err := os.WriteFile(p, []byte(pw), 0o600); err != nil {
		return err
	}
	v.RDPPasswordFile = p
	return nil
}
