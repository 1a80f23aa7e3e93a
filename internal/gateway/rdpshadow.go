package gateway

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/session"
)

// A desktop's RDP server (desktop.rdp_server).
const (
	// RDPServerXrdp bridges xrdp to the session's Xvnc: TLS only, no
	// logon (rdp.go's xrdpScript).
	RDPServerXrdp = "xrdp"
	// RDPServerShadow is FreeRDP's shadow server on the session's Xvnc
	// display, with NLA: clients log on with the session's one-time
	// password inside CredSSP, which runs end to end between the client
	// and the server; the gateway relays it encrypted and never reads it.
	RDPServerShadow = "shadow"
)

// shadowSAMFile is where, in the seal's private /tmp, the runner writes
// the shadow server's NTLM SAM file (contract.RDPLogon).
const shadowSAMFile = "/tmp/.airlock-rdp-sam"

// shadowScript starts FreeRDP's shadow server inside a desktop's seal, as
// the owner, sharing display :1 (the session's Xvnc) on the seal's
// loopback 3389, NLA only, against the SAM file the runner wrote. Its TLS
// certificate is made afresh in the seal's private /tmp, where the server
// looks for it ($XDG_CONFIG_HOME/freerdp/shadow). Nothing here holds the
// password: the SAM file has its NT hash only.
const shadowScript = `set -eu
d=/tmp/.airlock-shadow
mkdir -p -m 0700 "$d/freerdp/shadow"
cd "$d/freerdp/shadow"
openssl req -x509 -newkey rsa:2048 -nodes -keyout shadow.key -out shadow.crt -days 30 -subj "/CN=airlock desktop" 2>/dev/null
export XDG_CONFIG_HOME="$d" WLOG_LEVEL=ERROR
exec freerdp-shadow-cli /bind-address:127.0.0.1 /port:3389 /sec:nla "/sam-file:` + shadowSAMFile + `"
`

// shadowProcess is the process that serves RDP with NLA in a desktop.
func shadowProcess() contract.Command {
	return contract.Command{Argv: []string{"/bin/sh", "-c", shadowScript}, Env: map[string]string{"DISPLAY": ":1"}}
}

// shadowLogon hands the session's password to its runner for the SAM
// file: a 0600 file in the session's directory (local backend) or the
// job's environment (remote; remoteJobFor adds it).
func (g *Gateway) shadowLogon(spec *contract.Spec, p Profile, s *session.Session, dir string) error {
	l := &contract.RDPLogon{User: rdpLogonUser(p, s), SAMFile: shadowSAMFile}
	if g.remote != nil {
		l.PasswordEnv = EnvRDPPassword
	} else {
		l.PasswordFile = filepath.Join(dir, "rdp.password")
		if err := os.WriteFile(l.PasswordFile, []byte(g.derivedRDPPassword(s)), 0o600); err != nil {
			return fmt.Errorf("rdp password: %w", err)
		}
	}
	spec.RDPLogon = l
	return nil
}
