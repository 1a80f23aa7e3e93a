package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
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

	goldap "github.com/go-ldap/ldap/v3"
)

// SlapdPath is where Debian's slapd package installs the server.
const SlapdPath = "/usr/sbin/slapd"

// The directory StartSlapd loads. Every user is an inetOrgPerson under
// PeopleDN with uid = name and a salted-SHA1 userPassword, as slappasswd
// makes by default.
const (
	BaseDN   = "dc=example,dc=test"
	PeopleDN = "ou=people," + BaseDN
	// AdminsDN is a groupOfNames whose only member is alice.
	AdminsDN = "cn=admins,ou=groups," + BaseDN
	// UniqueAdminsDN is a groupOfUniqueNames whose only member is bob.
	UniqueAdminsDN = "cn=uadmins,ou=groups," + BaseDN
	// ReaderDN is a service account that may search the directory;
	// anonymous clients may not.
	ReaderDN       = "cn=reader," + BaseDN
	ReaderPassword = "reader-secret-4"

	AlicePassword = "alice-secret-1"
	BobPassword   = "bob-secret-22"
	// TwinPassword is the password of twin1 and twin2, two users whose
	// description is "twins": a filter on description matches both.
	TwinPassword = "twin-secret-55"
	// EvilDN is an entry an attacker controls, at the DN an unescaped
	// template "uid={user},ou=people,..." makes of the name "alice,ou=evil".
	// It is an account, not an inetOrgPerson, so a filter on
	// objectClass=inetOrgPerson does not find it.
	EvilDN       = "uid=alice,ou=evil," + PeopleDN
	EvilPassword = "evil-secret-333"
	// AliceMail is alice's mail attribute. bob's has a line break and a
	// Bcc header after his address; twin1's is a display name with one.
	AliceMail = "alice@example.test"
)

// Slapd is a running slapd, killed when the test ends.
type Slapd struct {
	// URL is the plain listener (StartTLS offered), ldap://127.0.0.1:port.
	URL string
	// TLSURL is the TLS listener, ldaps://127.0.0.1:port.
	TLSURL string
	// CAFile is a PEM file with the CA that signed the server's
	// certificate (for IP 127.0.0.1 and DNS name localhost).
	CAFile string
	// OtherCAFile is a PEM file with a CA that did not.
	OtherCAFile string
	// Log is slapd's stderr.
	Log string

	stopOnce sync.Once
	stop     func()
}

// Stop stops slapd (the server going down), and waits for it to exit.
// It is safe to call more than once; the test's cleanup calls it too.
func (s *Slapd) Stop() { s.stopOnce.Do(s.stop) }

// StartSlapd starts a slapd for t on two free ports of 127.0.0.1, loaded
// with the directory described above, and waits until ReaderDN can bind.
// It skips t if slapd is not installed. The server allows unauthenticated
// binds (a DN with an empty password), as Active Directory and many other
// servers do, so that tests can show the client refusing them.
func StartSlapd(t testing.TB) *Slapd {
	t.Helper()
	if _, err := os.Stat(SlapdPath); err != nil {
		t.Skipf("slapd not installed (%v); scripts/install-deps.sh installs slapd and ldap-utils", err)
	}
	dir := t.TempDir()
	s := &Slapd{
		CAFile:      filepath.Join(dir, "ca.pem"),
		OtherCAFile: filepath.Join(dir, "other-ca.pem"),
		Log:         filepath.Join(dir, "slapd.log"),
	}
	if err := writeCerts(dir); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(conf, []byte(slapdConf(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	ldif := filepath.Join(dir, "init.ldif")
	if err := os.WriteFile(ldif, []byte(initLDIF()), 0o600); err != nil {
		t.Fatal(err)
	}
	// slapadd loads the database offline, before slapd opens it.
	if out, err := exec.Command("/usr/sbin/slapadd", "-f", conf, "-l", ldif).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	// Free ports can be taken between our check and slapd's bind; retry.
	var lastErr error
	for range 3 {
		if lastErr = s.start(t, dir, conf); lastErr == nil {
			return s
		}
		t.Logf("start slapd: %v; retrying", lastErr)
	}
	t.Fatalf("start slapd: %v", lastErr)
	return nil
}

func (s *Slapd) start(t testing.TB, dir, conf string) error {
	p1, p2, err := freePorts()
	if err != nil {
		return err
	}
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", p1)
	s.TLSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", p2)
	logf, err := os.Create(s.Log)
	if err != nil {
		return err
	}
	defer logf.Close()
	// -d 0: stay in the foreground (so the process is ours to kill and
	// reap) and log nothing but startup errors.
	cmd := exec.Command(SlapdPath, "-f", conf, "-h", s.URL+"/ "+s.TLSURL+"/", "-d", "0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	err = WaitFor(10*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err // for stop
			return nil    // stop polling; reported below
		default:
		}
		c, err := goldap.DialURL(s.URL, goldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Bind(ReaderDN, ReaderPassword)
	})
	select {
	case werr := <-exited:
		log, _ := os.ReadFile(s.Log)
		return fmt.Errorf("slapd exited (%v): %s", werr, log)
	default:
	}
	if err != nil {
		stop()
		log, _ := os.ReadFile(s.Log)
		return fmt.Errorf("slapd never answered: %w\n%s", err, log)
	}
	s.stop = stop
	t.Cleanup(s.Stop)
	return nil
}

func freePorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

func slapdConf(dir string) string {
	return strings.ReplaceAll(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile DIR/slapd.pid
argsfile DIR/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile DIR/ca.pem
TLSCertificateFile DIR/server.pem
TLSCertificateKeyFile DIR/server-key.pem
# The hole the client must close: "DN plus empty password" binds succeed.
allow bind_anon_dn
database mdb
maxsize 104857600
suffix "dc=example,dc=test"
directory DIR/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth by * none
`, "DIR", dir)
}

func ssha(password string) string {
	salt := make([]byte, 8)
	rand.Read(salt)
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...))
}

func person(dn, uid, password, extra string) string {
	return fmt.Sprintf("dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\n%s\n",
		dn, uid, uid, uid, ssha(password), extra)
}

func initLDIF() string {
	var b strings.Builder
	b.WriteString("dn: " + BaseDN + "\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
	b.WriteString("dn: " + PeopleDN + "\nobjectClass: organizationalUnit\nou: people\n\n")
	b.WriteString("dn: ou=groups," + BaseDN + "\nobjectClass: organizationalUnit\nou: groups\n\n")
	b.WriteString("dn: ou=evil," + PeopleDN + "\nobjectClass: organizationalUnit\nou: evil\n\n")
	b.WriteString("dn: " + ReaderDN + "\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: " + ssha(ReaderPassword) + "\n\n")
	b.WriteString(person("uid=alice,"+PeopleDN, "alice", AlicePassword, "mail: "+AliceMail+"\n"))
	// bob's address carries a header after a line break (base64 in LDIF).
	b.WriteString(person("uid=bob,"+PeopleDN, "bob", BobPassword, "mail:: Ym9iQGV4YW1wbGUudGVzdA0KQmNjOiBldmlsQGV4YW1wbGUubmV0\n"))
	b.WriteString(person("uid=twin1,"+PeopleDN, "twin1", TwinPassword, "description: twins\nmail: Twin One <twin1@example.test>\n"))
	b.WriteString(person("uid=twin2,"+PeopleDN, "twin2", TwinPassword, "description: twins\n"))
	b.WriteString("dn: " + EvilDN + "\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: alice\nuserPassword: " + ssha(EvilPassword) + "\n\n")
	b.WriteString("dn: " + AdminsDN + "\nobjectClass: groupOfNames\ncn: admins\nmember: uid=alice," + PeopleDN + "\n\n")
	b.WriteString("dn: " + UniqueAdminsDN + "\nobjectClass: groupOfUniqueNames\ncn: uadmins\nuniqueMember: uid=bob," + PeopleDN + "\n\n")
	return b.String()
}

// writeCerts writes ca.pem, other-ca.pem, server.pem and server-key.pem.
func writeCerts(dir string) error {
	caKey, caCert, err := newCA("airlock test CA")
	if err != nil {
		return err
	}
	_, otherCert, err := newCA("airlock unrelated CA")
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return errors.Join(
		writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caCert.Raw),
		writePEM(filepath.Join(dir, "other-ca.pem"), "CERTIFICATE", otherCert.Raw),
		writePEM(filepath.Join(dir, "server.pem"), "CERTIFICATE", der),
		writePEM(filepath.Join(dir, "server-key.pem"), "PRIVATE KEY", pk),
	)
}

func newCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
