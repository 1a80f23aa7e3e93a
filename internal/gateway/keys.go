package gateway

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-hpc/airlock/internal/store"
	"github.com/airlock-hpc/airlock/internal/ticket"
)

// masterKey loads the gateway's secret from the state directory, making it
// on first start. Every session's ticket key and the login cookies derive
// from it, so it never leaves the state directory.
func masterKey(stateDir string) ([]byte, error) {
	p := filepath.Join(stateDir, "master.key")
	b, err := os.ReadFile(p)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("master key %s: want 32 bytes, have %d", p, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("master key: %w", err)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := writeNew(p, b); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return b, nil
}

// loadMasterKey returns the gateway's master key and, when it comes from
// a file of its own (store.master_key_file), the key that seals what the
// store shares between gateways. Without a file the key is
// state_dir/master.key, made at first start and, with a store several
// gateways share, replaced by the first gateway's from the store: there
// the database holds the key, and its backups open every ticket and
// cookie. With a file the key never enters the store; the store gets
// only a check value, so a gateway given another key (or none) refuses
// to start instead of minting tickets no other gateway takes.
func loadMasterKey(ctx context.Context, file, stateDir string, ss store.SharedSecrets) (master, seal []byte, err error) {
	if file == "" {
		master, err = masterKey(stateDir)
		if err == nil && ss != nil {
			// Several gateways: every one derives tickets and cookies
			// from the same key, the first gateway's (or the one this
			// gateway had before the site moved to a shared store).
			_, err = shareFiles(ctx, ss, nil, stateDir, "master.key", "master.key")
			if errors.Is(err, errKeptInFile) {
				err = errors.New("master key: the site's other gateways keep it in store.master_key_file: give this gateway the same file")
			} else if err == nil {
				master, err = masterKey(stateDir)
			}
		}
	} else {
		master, err = readMasterKeyFile(file)
		if err == nil && ss != nil {
			// Hold the key's place in the store, so that a gateway
			// configured without the file never puts its own there.
			var stored []byte
			stored, err = ss.SharedSecret(ctx, "master.key", []byte(keptInFile))
			if err == nil && string(stored) != keptInFile {
				err = errors.New("master key: the database still holds the master key gateways shared before store.master_key_file was set; " +
					"to keep sessions and second factors, write that key (state_dir/master.key of a gateway, 32 bytes) to the file on every gateway; " +
					"then, with every gateway stopped, delete it from the database (DELETE FROM secrets WHERE name IN ('master.key', 'master.key.check'))")
			}
		}
		if err == nil {
			k := derive(master, "airlock shared secret seal", "")
			seal = k[:]
		}
	}
	if err == nil && ss != nil {
		err = checkSharedMaster(ctx, ss, master, file)
	}
	if err != nil {
		return nil, nil, err
	}
	return master, seal, nil
}

// keptInFile holds the master key's place in a shared store whose
// gateways read it from store.master_key_file.
const keptInFile = "airlock: the master key is kept in store.master_key_file, not here"

var errKeptInFile = errors.New("kept in store.master_key_file")

// masterKeyCheck is the value every gateway of a site stores and
// compares: it names the key without revealing it.
const masterKeyCheck = "master.key.check"

func checkSharedMaster(ctx context.Context, ss store.SharedSecrets, master []byte, file string) error {
	mine := derive(master, "airlock master key check", "")
	theirs, err := ss.SharedSecret(ctx, masterKeyCheck, mine[:])
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	if hmac.Equal(theirs, mine[:]) {
		return nil
	}
	if file == "" {
		return errors.New("master key: the site's other gateways use another master key, from their store.master_key_file: give this gateway the same file")
	}
	return fmt.Errorf("master key: %s is not the key the site's other gateways use (the store holds their check value): give every gateway the same file", file)
}

// readMasterKeyFile reads a master key kept outside the state directory:
// 32 bytes, raw or as 64 hexadecimal digits (`openssl rand -hex 32`). A
// file others may read is refused: it opens every session.
func readMasterKeyFile(p string) ([]byte, error) {
	// Checked and read through one open file: a path swapped between a
	// check and a read would pass the check with one file and give the
	// key of another.
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("store.master_key_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store.master_key_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store.master_key_file %s: not a regular file", p)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("store.master_key_file %s: mode %04o lets other users read it (chmod 600)", p, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		// Its owner may rewrite it: with a key of their own they would
		// mint every user's tickets and cookies.
		return nil, fmt.Errorf("store.master_key_file %s: owned by uid %d, not this gateway's account (uid %d) or root (chown it)", p, st.Uid, os.Geteuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("store.master_key_file: %w", err)
	}
	if len(b) == 32 {
		return b, nil
	}
	if h := strings.TrimSpace(string(b)); len(h) == 64 {
		if k, err := hex.DecodeString(h); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("store.master_key_file %s: want 32 bytes or 64 hexadecimal digits, have %d bytes", p, len(b))
}

// sealedPrefix marks a shared secret sealed under a master key file's
// sealing key (AES-256-GCM, the secret's name as additional data, so a
// value cannot be moved to another name).
const sealedPrefix = "airlock-sealed-v1:"

func sealSecret(key []byte, name string, plain []byte) []byte {
	aead := mustGCM(key)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte(sealedPrefix), nonce...)
	return aead.Seal(out, nonce, plain, []byte(name))
}

// openSecret returns a stored shared secret in clear. A value stored in
// clear (before the site set store.master_key_file) is taken as it is.
func openSecret(key []byte, name string, stored []byte) ([]byte, error) {
	body, sealed := bytes.CutPrefix(stored, []byte(sealedPrefix))
	if !sealed {
		return stored, nil
	}
	if key == nil {
		return nil, errors.New("stored sealed under a store.master_key_file this gateway lacks")
	}
	aead := mustGCM(key)
	if len(body) < aead.NonceSize() {
		return nil, errors.New("stored value too short")
	}
	plain, err := aead.Open(nil, body[:aead.NonceSize()], body[aead.NonceSize():], []byte(name))
	if err != nil {
		return nil, errors.New("stored sealed under another master key")
	}
	return plain, nil
}

func mustGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

// writeNew creates p with data, 0600, failing if it exists.
func writeNew(p string, data []byte) error {
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

// derive returns HMAC-SHA256(master, label \0 id): one key per purpose and
// session, so a key leaked from one session's node opens nothing else.
func derive(master []byte, label, id string) [32]byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(id))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

func (g *Gateway) sessionKey(id string) ticket.Key {
	return ticket.Key(derive(g.master, "airlock session ticket key", id))
}

// loadOrMakeTLS returns the configured certificate, or a self-signed one
// made on first start and kept in the state directory. The self-signed one
// also names *.appsDomain, the app hosts; one kept from before that lacks
// it is made again.
func loadOrMakeTLS(certFile, keyFile, stateDir, appsDomain string) (tls.Certificate, error) {
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load TLS certificate: %w", err)
		}
		return c, nil
	}
	certFile, keyFile = filepath.Join(stateDir, "tls.crt"), filepath.Join(stateDir, "tls.key")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if appsDomain == "" || c.Leaf != nil && c.Leaf.VerifyHostname("s-0."+appsDomain) == nil {
			return c, nil
		}
		// Made before the app hosts: replace it (it was self-signed;
		// browsers asked to trust it once and will ask again).
		if err := errors.Join(os.Remove(certFile), os.Remove(keyFile)); err != nil {
			return tls.Certificate{}, fmt.Errorf("replace the self-signed certificate: %w", err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "airlock gateway " + host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames("localhost", host, "*."+appsDomain),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if err := writeNew(keyFile, keyPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS key: %w", err)
	}
	if err := writeNew(certFile, certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("save TLS certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}

// dnsNames drops the empty and the repeated names.
func dnsNames(names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" && n != "*." && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
