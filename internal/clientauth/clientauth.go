// Package clientauth keeps a user's gateway login on their own machine, for
// the commands that talk to a gateway as them (`airlock login` writes it,
// `airlock forward` reads it): the gateway's URL, an API token, and
// optionally the CA file that verifies the gateway. It lives in one JSON
// file, 0600 in a 0700 directory under the user's config directory
// ($XDG_CONFIG_HOME/airlock/login.json, else ~/.config/airlock/login.json).
//
// AIRLOCK_GATEWAY, AIRLOCK_TOKEN and AIRLOCK_CA override the file field by
// field, so a batch job can carry a token without any file.
package clientauth

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Credentials are what a command needs to reach a gateway as its user.
type Credentials struct {
	Gateway string `json:"gateway"`
	Token   string `json:"token"`
	// CAFile verifies the gateway's certificate; empty: the system's roots.
	CAFile string `json:"ca_file,omitempty"`
	// Pin, when set, is the SHA-256 (hex) of the gateway's own
	// certificate, which then replaces the chain check (a self-signed
	// gateway; `airlock login --pin`).
	Pin string `json:"pin_sha256,omitempty"`
}

// ErrPin says the gateway's certificate is not the pinned one.
var ErrPin = errors.New("the gateway's certificate does not match the pinned SHA-256")

// Path is the file the credentials are kept in.
func Path() (string, error) {
	// AIRLOCK_CONFIG_DIR overrides the user's config directory (tests,
	// several accounts).
	if dir := os.Getenv("AIRLOCK_CONFIG_DIR"); dir != "" {
		return filepath.Join(dir, "login.json"), nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("clientauth: no config directory: %w", err)
	}
	return filepath.Join(dir, "airlock", "login.json"), nil
}

// Save writes c to Path, readable by its owner only. The file is written
// aside and renamed, so a reader never sees half of it.
func Save(c Credentials) error {
	p, err := Path()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("clientauth: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("clientauth: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".login-*")
	if err != nil {
		return fmt.Errorf("clientauth: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("clientauth: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("clientauth: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("clientauth: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("clientauth: %w", err)
	}
	return nil
}

// ErrNoLogin says there is neither a saved login nor AIRLOCK_TOKEN.
var ErrNoLogin = errors.New("no gateway login: run `airlock login --gateway URL`, or set AIRLOCK_TOKEN and AIRLOCK_GATEWAY")

// Load returns the saved credentials with the environment's overrides. A
// file readable by others is refused: the token in it is a password.
func Load() (Credentials, error) {
	var c Credentials
	p, err := Path()
	if err == nil {
		f, err := os.Open(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return c, fmt.Errorf("clientauth: %w", err)
		default:
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return c, fmt.Errorf("clientauth: %w", err)
			}
			// (Windows has no such mode bits: its file ACLs decide.)
			if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
				return c, fmt.Errorf("clientauth: %s is readable by others (mode %v); chmod 600 it", p, st.Mode().Perm())
			}
			if err := json.NewDecoder(f).Decode(&c); err != nil {
				return c, fmt.Errorf("clientauth: %s: %w", p, err)
			}
		}
	}
	if v := os.Getenv("AIRLOCK_GATEWAY"); v != "" {
		c.Gateway = v
	}
	if v := os.Getenv("AIRLOCK_TOKEN"); v != "" {
		c.Token = v
	}
	if v := os.Getenv("AIRLOCK_CA"); v != "" {
		c.CAFile = v
	}
	c.Gateway = strings.TrimSuffix(c.Gateway, "/")
	if c.Token == "" || c.Gateway == "" {
		return c, ErrNoLogin
	}
	return c, nil
}

// TLS is the configuration that verifies the gateway: CAFile's
// certificates, or the system's roots.
func (c Credentials) TLS() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.Pin != "" {
		want, err := hex.DecodeString(c.Pin)
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("clientauth: pin %q: want the 64 hex digits of a SHA-256", c.Pin)
		}
		cfg.InsecureSkipVerify = true // the pin replaces the chain check
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrPin
			}
			if sum := sha256.Sum256(cs.PeerCertificates[0].Raw); !bytes.Equal(sum[:], want) {
				return ErrPin
			}
			return nil
		}
		return cfg, nil
	}
	if c.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("clientauth: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("clientauth: CA file %s holds no PEM certificate", c.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
