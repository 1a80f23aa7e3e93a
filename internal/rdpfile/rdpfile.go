// Package rdpfile is the .airlock connection file: what `airlock rdp FILE`
// needs to reach one session's RDP server through the gateway's TLS port
// (the gateway's address, the SHA-256 pin of its certificate, the session,
// and a client certificate with its key). The gateway writes it
// (POST /api/v1/sessions/ID/rdp), the client reads it; both sides share
// this leaf package and nothing else. It imports only the standard library.
package rdpfile

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Version is the file format's version.
const Version = 1

// Status lines the gateway's RDP port sends after the TLS handshake,
// before any RDP byte: StatusOK, or StatusRefused followed by one sentence
// for the user and a newline.
const (
	StatusOK      = "airlock-rdp ok\n"
	StatusRefused = "airlock-rdp refused: "
)

// MaxSize bounds a file: a real one is about 2 kB.
const MaxSize = 64 << 10

// File is one .airlock connection file (JSON).
type File struct {
	Version int `json:"airlock_rdp"`
	// Gateway is the host:port of the gateway's TLS port for native clients.
	Gateway string `json:"gateway"`
	// PinSHA256 is the hex SHA-256 of the gateway's certificate (DER); the
	// client refuses any other before it sends its own.
	PinSHA256 string `json:"pin_sha256"`
	Session   string `json:"session"`
	User      string `json:"user"`
	// Expires is when the certificate stops working.
	Expires time.Time `json:"expires"`
	// CertPEM and KeyPEM are the client certificate and its private key.
	CertPEM string `json:"cert"`
	KeyPEM  string `json:"key"`
	// Password is the guest's one-time password for the session (a VM
	// image with rdp_password: generate), in the owner's file only; ""
	// for none. `airlock rdp` hands it to the RDP client.
	Password string `json:"password,omitempty"`
}

var (
	sessionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	pinRe     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// passwordRe: letters and digits only, so the password needs no
	// quoting in an .rdp file or on the way to a client.
	passwordRe = regexp.MustCompile(`^[A-Za-z0-9]{8,64}$`)
)

// Parse reads and checks a file. Its errors are plain sentences a user can
// act on.
func Parse(b []byte) (*File, error) {
	if len(b) > MaxSize {
		return nil, errors.New("this is not an .airlock file (it is too large)")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var f File
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("this is not an .airlock file (%v)", err)
	}
	if d.More() {
		return nil, errors.New("this is not an .airlock file (text after the end)")
	}
	if f.Version != Version {
		return nil, fmt.Errorf("this .airlock file has version %d; this airlock reads version %d", f.Version, Version)
	}
	if !sessionRe.MatchString(f.Session) {
		return nil, errors.New("this .airlock file names no valid session")
	}
	if _, _, err := net.SplitHostPort(f.Gateway); err != nil || f.Gateway == "" {
		return nil, errors.New("this .airlock file has no valid gateway address (want host:port)")
	}
	if !pinRe.MatchString(f.PinSHA256) {
		return nil, errors.New("this .airlock file has no valid gateway pin (want 64 hex digits)")
	}
	if f.Password != "" && !passwordRe.MatchString(f.Password) {
		return nil, errors.New("this .airlock file's password is damaged (want 8 to 64 letters and digits)")
	}
	if _, err := f.Certificate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Certificate is the file's client certificate and key.
func (f *File) Certificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair([]byte(f.CertPEM), []byte(f.KeyPEM))
	if err != nil {
		return tls.Certificate{}, errors.New("this .airlock file's certificate or key is damaged")
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return tls.Certificate{}, errors.New("this .airlock file's certificate is damaged")
	}
	c.Leaf = leaf
	return c, nil
}

// Marshal writes f.
func (f *File) Marshal() ([]byte, error) {
	f.Version = Version
	return json.MarshalIndent(f, "", "  ")
}

// ErrPin is the refusal of a gateway whose certificate is not the pinned one.
var ErrPin = errors.New("the gateway's certificate does not match the one in this file; not connecting (someone may be in between, or the gateway's certificate changed: download a new file)")

// TLSConfig is the client side of the tunnel: it presents the file's
// certificate only to a gateway whose certificate is the pinned one.
// crypto/tls runs VerifyConnection before the client sends its own
// certificate, so a wrong gateway learns nothing but the SNI.
func (f *File) TLSConfig() (*tls.Config, error) {
	cert, err := f.Certificate()
	if err != nil {
		return nil, err
	}
	pin, _ := hex.DecodeString(f.PinSHA256)
	host, _, _ := net.SplitHostPort(f.Gateway)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ServerName:   host,
		MinVersion:   tls.VersionTLS13,
		// The pin replaces the chain check: the gateway's certificate is
		// often self-signed. VerifyConnection still runs.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(sha256Sum(cs.PeerCertificates[0].Raw), pin) {
				return ErrPin
			}
			return nil
		},
	}, nil
}
