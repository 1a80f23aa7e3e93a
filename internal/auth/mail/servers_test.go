package mail_test

import (
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
	"testing"
	"time"
)

// certFiles writes a self-signed certificate for 127.0.0.1 and its key
// into dir (cert.pem, key.pem) and returns the certificate's path, which is
// also the CA file a client needs.
func certFiles(t testing.TB, dir string) (string, tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pair
}

// openDir lets the server's own account into dir (a test's temporary
// directory and its parent are root's, mode 0700).
func openDir(dir string) {
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitGreeting waits until addr answers with a line starting with want.
func waitGreeting(t testing.TB, addr, want string, logFile string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 64)
			n, _ := c.Read(b)
			c.Close()
			if strings.HasPrefix(string(b[:n]), want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(logFile)
	t.Fatalf("%s did not greet with %q in 15s; log:\n%s", addr, want, log)
}

// needRoot skips unless the test runs as root with the server binary:
// Dovecot and Exim drop to their own accounts, which only root can do.
func needRoot(t testing.TB, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the mail server drops to its own account")
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("%s missing (scripts/install-deps.sh installs it)", bin)
	}
}

// users are the mail accounts of both servers: login → password.
var users = map[string]string{"alice@example.org": "alice-mail-pw", "bob@example.org": "bob-mail-pw"}

// startDovecot runs Debian's Dovecot by hand (no systemd) on two
// loopback ports: STARTTLS and implicit TLS. It returns their addresses
// and the CA file.
func startDovecot(t testing.TB) (starttls, implicit, ca string) {
	t.Helper()
	needRoot(t, "dovecot")
	dir := t.TempDir()
	openDir(dir) // the login and auth processes run as dovenull and dovecot
	ca, _ = certFiles(t, dir)
	var pw strings.Builder
	for u, p := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u, p)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p1, p2 := freePort(t), freePort(t)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = yes
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:%[1]s/mail/%%u
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=%[1]s/home/%%u
}
# Dovecot's auth penalty delays failures from one address by up to 15 s;
# every test login comes from 127.0.0.1.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]d
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[3]d
    ssl = yes
  }
}
`, dir, p1, p2)
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dovecot", "-F", "-c", cf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	starttls, implicit = fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2)
	waitGreeting(t, starttls, "* OK", filepath.Join(dir, "dovecot.log"))
	return starttls, implicit, ca
}

// startExim runs Debian's Exim by hand on a loopback port with STARTTLS;
// AUTH PLAIN and LOGIN are offered only after TLS.
func startExim(t testing.TB) (addr, ca string) {
	t.Helper()
	needRoot(t, "exim4")
	dir := t.TempDir()
	openDir(dir) // Exim runs as Debian-exim
	ca, _ = certFiles(t, dir)
	var pw strings.Builder
	for u, p := range users {
		fmt.Fprintf(&pw, "%s: %s\n", u, p)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"spool", "log"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
		exec.Command("chown", "Debian-exim:Debian-exim", filepath.Join(dir, d)).Run()
	}
	port := freePort(t)
	conf := fmt.Sprintf(`keep_environment =
primary_hostname = mail.test
daemon_smtp_ports = %[2]d
local_interfaces = 127.0.0.1
smtp_accept_max = 100
smtp_accept_max_per_host = 100
smtp_accept_queue_per_connection = 0
spool_directory = %[1]s/spool
log_file_path = %[1]s/log/%%slog
tls_advertise_hosts = *
tls_certificate = %[1]s/cert.pem
tls_privatekey = %[1]s/key.pem
auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  accept authenticated = *
  deny
begin authenticators
PLAIN:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if eq{$auth3}{${lookup{$auth2}lsearch{%[1]s/passwd}{$value}fail}}}
  server_set_id = $auth2
LOGIN:
  driver = plaintext
  public_name = LOGIN
  server_prompts = "Username:: : Password::"
  server_condition = ${if eq{$auth2}{${lookup{$auth1}lsearch{%[1]s/passwd}{$value}fail}}}
  server_set_id = $auth1
`, dir, port)
	cf := filepath.Join(dir, "exim.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("exim4", "-C", cf, "-bdf")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitGreeting(t, addr, "220", filepath.Join(dir, "log", "mainlog"))
	return addr, ca
}

// startOldTLS listens with TLS 1.0 only (Go's crypto/tls: neither Dovecot
// nor Exim can be held to TLS 1.0 alone with Debian's OpenSSL settings):
// a server a client with a sane minimum must refuse.
func startOldTLS(t testing.TB) (addr, ca string) {
	t.Helper()
	ca, pair := certFiles(t, t.TempDir())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("* OK old server\r\n"))
					b := make([]byte, 256)
					c.Read(b)
				}
			}()
		}
	}()
	return ln.Addr().String(), ca
}
