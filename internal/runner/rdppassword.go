package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// rdpPasswordRE is what a one-time RDP password may be: letters and
// digits only, so it needs no quoting in an SMBIOS string, a Windows
// `net user` command or an .rdp file.
var rdpPasswordRE = regexp.MustCompile(`^[A-Za-z0-9]{8,64}$`)

// rdpUserRE is what the password's account may be called.
var rdpUserRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validateRDPPassword checks the spec's RDP password fields (not the
// password, which is read later).
func validateRDPPassword(v *VMSpec) error {
	if v.RDPPasswordFile == "" && v.RDPPasswordEnv == "" {
		if v.RDPUser != "" {
			return errors.New("spec: vm.rdp_user: only with vm.rdp_password_file or vm.rdp_password_env")
		}
		return nil
	}
	switch {
	case v.RDPUser != "" && !rdpUserRE.MatchString(v.RDPUser):
		return fmt.Errorf("spec: vm.rdp_user %q: want 1-64 of A-Z a-z 0-9 . _ -", v.RDPUser)
	case v.RDPPasswordFile != "" && v.RDPPasswordEnv != "":
		return errors.New("spec: vm.rdp_password_file and vm.rdp_password_env: one or the other")
	case !v.RDP:
		return errors.New("spec: vm.rdp_password_*: only with vm.rdp (the password is for the guest's RDP server)")
	case v.RDPPasswordEnv != "" && !envNameRE.MatchString(v.RDPPasswordEnv):
		return fmt.Errorf("spec: vm.rdp_password_env %q: not an environment variable name", v.RDPPasswordEnv)
	case v.RDPPasswordFile != "" && (!filepath.IsAbs(v.RDPPasswordFile) || filepath.Clean(v.RDPPasswordFile) != v.RDPPasswordFile):
		// Read by the runner before the seal exists, like ticket_key_file:
		// any clean absolute path.
		return fmt.Errorf("spec: vm.rdp_password_file %q: want a clean absolute path", v.RDPPasswordFile)
	}
	return nil
}

// readRDPPassword returns the session's one-time RDP password for the
// guest, or "" when the spec has none.
func readRDPPassword(v *VMSpec) (string, error) {
	return readPassword(v.RDPPasswordFile, v.RDPPasswordEnv, "vm")
}

// writeSecretFile creates p, 0600, with data; it must not exist (a link
// planted in its place is refused, not followed).
func writeSecretFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
