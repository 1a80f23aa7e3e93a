package runner

import (
	"crypto/des"
	"crypto/rand"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/airlock-hpc/airlock/internal/seal"
)

// A session VNC password (ConnectorSpec.SessionVNCPasswordFile) is a second
// lock beside the seal: should anything but the connector ever reach the
// desktop's VNC port, Xvnc asks it for a password that exists only in the
// runner's memory, the connector's (through its secrets pipe) and one file
// in the seal's private /tmp that Xvnc reads at each login (TigerVNC reads
// -PasswordFile anew for every client). It is never on a command line, in
// the spec, at the gateway or in the store. The workload can read the file
// (Xvnc is the workload, and runs as the owner like everything else in the
// seal), but a workload already holds the desktop it would unlock.

// vncPasswordAlphabet: printable, so the file can be checked by hand; VNC
// uses 8 bytes of a password, so 8 of 62 symbols give 47 bits, for a
// password nobody types and that dies with the session.
const vncPasswordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newVNCPassword makes a session's VNC password.
func newVNCPassword() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("vnc password: %w", err)
	}
	for i := range b {
		// 256 % 62 leaves a small bias; 47 bits of a one-session secret
		// do not need the last fraction of one.
		b[i] = vncPasswordAlphabet[int(b[i])%len(vncPasswordAlphabet)]
	}
	return string(b), nil
}

// vncPasswdKey is the fixed key VNC servers obfuscate stored passwords
// with (vncpasswd's format), with each byte's bits reversed, as the VNC
// flavour of DES expects them.
var vncPasswdKey = func() []byte {
	k := []byte{23, 82, 107, 6, 35, 78, 88, 7}
	for i, c := range k {
		k[i] = bits.Reverse8(c)
	}
	return k
}()

// vncPasswdFile is pw in the format of TigerVNC's `vncpasswd -f`: its
// first 8 bytes, zero-padded, DES-encrypted under the fixed key.
func vncPasswdFile(pw string) []byte {
	var plain [8]byte
	copy(plain[:], pw)
	c, _ := des.NewCipher(vncPasswdKey) // 8-byte key: cannot fail
	out := make([]byte, 8)
	c.Encrypt(out, plain[:])
	return out
}

// validSessionVNCPasswordFile: the file is made in the seal's private
// /tmp itself (a subdirectory would be the runner's, and perhaps not the
// owner's to enter).
func validSessionVNCPasswordFile(p string) error {
	if filepath.Dir(p) != "/tmp" || filepath.Clean(p) != p || strings.ContainsRune(p, 0) || p == "/tmp/.." {
		return fmt.Errorf("%q: want a file directly in /tmp (the seal's own)", p)
	}
	return nil
}

// writeSessionVNCPasswords writes each connector's session VNC password
// file into the scratch's tmp (the seal's /tmp), readable by the owner
// only. The tmp directory is the runner's own, made a moment ago, and the
// file is made new (O_EXCL, no symbolic link followed).
func (r *run) writeSessionVNCPasswords(owner seal.Owner, scratch string, secrets map[string]ConnectorSecrets) error {
	for _, c := range r.spec.Connectors {
		if c.SessionVNCPasswordFile == "" {
			continue
		}
		path := filepath.Join(scratch, "tmp", filepath.Base(c.SessionVNCPasswordFile))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o400)
		if err != nil {
			return fmt.Errorf("connector %s: session vnc password: %w", c.Name, err)
		}
		_, err = f.Write(vncPasswdFile(secrets[c.Name].VNCPassword))
		if err == nil && os.Geteuid() == 0 {
			// Xvnc runs as the owner.
			err = f.Chown(owner.UID, owner.GID)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("connector %s: session vnc password: %w", c.Name, err)
		}
	}
	return nil
}
