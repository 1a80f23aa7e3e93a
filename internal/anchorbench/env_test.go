package anchorbench

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// env is what every path shares within one test binary run: the airlock
// binary, the PKI, the ticket key and the sink. It is built on first use,
// so `go test` runs that skip every benchmark pay nothing.
type env struct {
	dir string // temporary; removed by closeEnv

	bin string // airlock, built from this module

	keyFile string
	key     ticket.Key

	caFile, certFile, certKeyFile string
	caPool                        *x509.CertPool
	serverCert, clientCert        tls.Certificate

	sink *sink
}

var (
	envOnce sync.Once
	theEnv  *env
	envErr  error
)

// getEnv returns the shared env, building it the first time, and fails tb
// if that failed.
func getEnv(tb testing.TB) *env {
	tb.Helper()
	envOnce.Do(func() { theEnv, envErr = newEnv() })
	if envErr != nil {
		tb.Fatal(envErr)
	}
	return theEnv
}

// closeEnv stops the sink and removes the env's files; TestMain calls it
// after every test and benchmark, when no path is running any more.
func closeEnv() {
	if theEnv == nil {
		return
	}
	theEnv.sink.close()
	os.RemoveAll(theEnv.dir)
}

func newEnv() (_ *env, err error) {
	dir, err := os.MkdirTemp("", "anchorbench-")
	if err != nil {
		return nil, fmt.Errorf("set up bench env: %w", err)
	}
	e := &env{dir: dir}
	defer func() {
		if err != nil {
			if e.sink != nil {
				e.sink.close()
			}
			os.RemoveAll(dir)
			err = fmt.Errorf("set up bench env: %w", err)
		}
	}()
	if e.bin, err = buildAirlock(dir); err != nil {
		return nil, err
	}
	if e.key, err = ticket.NewKey(); err != nil {
		return nil, err
	}
	e.keyFile = filepath.Join(dir, "ticket.key")
	if err := os.WriteFile(e.keyFile, e.key[:], 0o600); err != nil {
		return nil, fmt.Errorf("write ticket key %s: %w", e.keyFile, err)
	}
	if err := e.makePKI(); err != nil {
		return nil, err
	}
	if e.sink, err = startSink(e.serverTLS(true)); err != nil {
		return nil, err
	}
	return e, nil
}

// withBin returns a copy of e whose connectors run from bin.
func (e *env) withBin(bin string) *env {
	c := *e
	c.bin = bin
	return &c
}

// buildAirlock builds cmd/airlock into dir the way `make build` does
// (no cgo) and returns its path.
func buildAirlock(dir string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "airlock")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/airlock")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build airlock in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// makePKI writes a CA, a server certificate for 127.0.0.1 and its key as
// PEM files for the proxies, and keeps a client certificate for the
// mutual-TLS paths. ECDSA P-256 throughout: the curve every one of the
// proxies negotiates fastest, so the handshake favours none of them.
func (e *env) makePKI() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "anchorbench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA certificate: %w", err)
	}
	e.caPool = x509.NewCertPool()
	e.caPool.AddCert(ca)

	issue := func(cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate key for %s: %w", cn, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("create certificate %s: %w", cn, err)
		}
		kDER, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal key of %s: %w", cn, err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kDER}), nil
	}
	srvPEM, srvKeyPEM, err := issue("127.0.0.1", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	cliPEM, cliKeyPEM, err := issue("bench", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	if e.serverCert, err = tls.X509KeyPair(srvPEM, srvKeyPEM); err != nil {
		return fmt.Errorf("load server key pair: %w", err)
	}
	if e.clientCert, err = tls.X509KeyPair(cliPEM, cliKeyPEM); err != nil {
		return fmt.Errorf("load client key pair: %w", err)
	}
	e.caFile = filepath.Join(e.dir, "ca.pem")
	e.certFile = filepath.Join(e.dir, "server.pem")
	e.certKeyFile = filepath.Join(e.dir, "server-key.pem")
	for path, b := range map[string][]byte{
		e.caFile:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		e.certFile:    srvPEM,
		e.certKeyFile: srvKeyPEM,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// serverTLS is the sink's TLS configuration (the direct-TLS floor),
// with or without required client certificates.
func (e *env) serverTLS(mutual bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{e.serverCert}, MinVersion: tls.VersionTLS12}
	if mutual {
		c.ClientCAs = e.caPool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// clientTLS trusts the bench CA and, with mutual, presents the client
// certificate. There is no session cache: every connection pays a full
// handshake, as a fresh browser tab or RDP client would.
func (e *env) clientTLS(mutual bool) *tls.Config {
	c := &tls.Config{RootCAs: e.caPool, MinVersion: tls.VersionTLS12}
	if mutual {
		c.Certificates = []tls.Certificate{e.clientCert}
	}
	return c
}

// raiseFileLimit lifts the soft descriptor limit to the hard one. 1,000
// connections cost the test process two descriptors each (client and sink
// end) and a proxy two more. Calling Setrlimit explicitly also stops
// os/exec from restoring the original soft limit in children, so the
// proxies inherit the raised one (see syscall.Setrlimit's doc).
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	lim.Cur = min(lim.Max, 1<<20)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("set RLIMIT_NOFILE to %d: %w", lim.Cur, err)
	}
	if lim.Cur < 8192 {
		return fmt.Errorf("set RLIMIT_NOFILE: hard limit %d is below the 8192 that 1,000 connections need", lim.Max)
	}
	return nil
}

// tail returns the last n bytes of the file at path, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
