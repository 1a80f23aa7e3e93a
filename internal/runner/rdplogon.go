package runner

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf16"

	//lint:ignore SA1019 NTLM's NT hash is MD4 by definition; FreeRDP's SAM file holds nothing else.
	"golang.org/x/crypto/md4"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/seal"
)

// A desktop whose RDP server does NLA (FreeRDP's shadow server) checks
// the client's CredSSP logon against an NTLM SAM file. The runner makes
// that file from the session's one-time password: only the NT hash goes
// into the seal, so the workload (which can read the file: the server
// runs as the owner) learns nothing it could not learn by being the
// desktop it would unlock, and the password is on no command line.

// validateRDPLogon checks spec.rdp_logon (not the password, read later).
func validateRDPLogon(l *contract.RDPLogon, vm bool) error {
	switch {
	case vm:
		return errors.New("spec: rdp_logon: not with vm (a guest gets vm.rdp_password_*)")
	case !rdpUserRE.MatchString(l.User):
		return fmt.Errorf("spec: rdp_logon.user %q: want 1-64 of A-Z a-z 0-9 . _ -", l.User)
	case (l.PasswordFile == "") == (l.PasswordEnv == ""):
		return errors.New("spec: rdp_logon: want one of password_file and password_env")
	case l.PasswordEnv != "" && !envNameRE.MatchString(l.PasswordEnv):
		return fmt.Errorf("spec: rdp_logon.password_env %q: not an environment variable name", l.PasswordEnv)
	case l.PasswordFile != "" && (!filepath.IsAbs(l.PasswordFile) || filepath.Clean(l.PasswordFile) != l.PasswordFile):
		return fmt.Errorf("spec: rdp_logon.password_file %q: want a clean absolute path", l.PasswordFile)
	}
	if err := validSessionVNCPasswordFile(l.SAMFile); err != nil {
		return fmt.Errorf("spec: rdp_logon.sam_file: %w", err)
	}
	return nil
}

// ntHash is NTLM's hash of pw: MD4 of its UTF-16LE form.
func ntHash(pw string) []byte {
	h := md4.New()
	for _, u := range utf16.Encode([]rune(pw)) {
		h.Write([]byte{byte(u), byte(u >> 8)})
	}
	return h.Sum(nil)
}

// samLine is user's entry in a WinPR SAM file. The LM hash is the one of
// the empty password (LM is off); FreeRDP checks only the NT hash.
func samLine(user, pw string) string {
	return user + "::aad3b435b51404eeaad3b435b51404ee:" + hex.EncodeToString(ntHash(pw)) + ":::\n"
}

// writeRDPLogon writes the spec's SAM file into the scratch's tmp (the
// seal's /tmp), the owner's alone, made new (O_EXCL, no link followed).
func (r *run) writeRDPLogon(owner seal.Owner, scratch string) error {
	l := r.spec.RDPLogon
	if l == nil {
		return nil
	}
	pw, err := readPassword(l.PasswordFile, l.PasswordEnv, "rdp_logon")
	if err != nil {
		return err
	}
	path := filepath.Join(scratch, "tmp", filepath.Base(l.SAMFile))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o400)
	if err != nil {
		return fmt.Errorf("rdp_logon: sam file: %w", err)
	}
	_, err = f.WriteString(samLine(l.User, pw))
	if err == nil && os.Geteuid() == 0 {
		// The RDP server runs as the owner.
		err = f.Chown(owner.UID, owner.GID)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rdp_logon: sam file: %w", err)
	}
	return nil
}

// readPassword reads a one-time password from file or env (unset at
// once, so that nothing the runner starts inherits it); what names the
// spec's field in errors, which never hold the password itself.
func readPassword(file, env, what string) (string, error) {
	var pw, from string
	switch {
	case env != "":
		from = "$" + env
		pw = os.Getenv(env)
		os.Unsetenv(env)
	case file != "":
		from = file
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: password file: %w", what, err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	default:
		return "", nil
	}
	if !rdpPasswordRE.MatchString(pw) {
		return "", fmt.Errorf("%s: the RDP password from %s: want 8-64 of A-Z a-z 0-9 (%d bytes given)", what, from, len(pw))
	}
	return pw, nil
}
