package rdpfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func sample(t testing.TB) *File {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return &File{Version: Version, Gateway: "gw.example:8444", PinSHA256: strings.Repeat("0f", 32), Session: "s-1", User: "alice",
		Expires: tmpl.NotAfter, CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))}
}

func TestRoundTrip(t *testing.T) {
	b, err := sample(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Session != "s-1" || f.Gateway != "gw.example:8444" || f.Password != "" || strings.Contains(string(b), "password") {
		t.Fatalf("%+v", f)
	}
	withPw := sample(t)
	withPw.Password = "Ab3Cd4Ef5Gh6Jk7Mn8Pq"
	b, _ = withPw.Marshal()
	if f, err := Parse(b); err != nil || f.Password != withPw.Password {
		t.Fatalf("with a password: %+v %v", f, err)
	}
}

// TestParseRefusals: each bad file gets one plain sentence.
func TestParseRefusals(t *testing.T) {
	good, _ := sample(t).Marshal()
	mut := func(from, to string) []byte { return []byte(strings.Replace(string(good), from, to, 1)) }
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"not json":       {[]byte("[rdp]\nfull address:s:x"), "not an .airlock file"},
		"unknown field":  {mut(`"session"`, `"evil": 1, "session"`), "not an .airlock file"},
		"version":        {mut(`"airlock_rdp": 1`, `"airlock_rdp": 9`), "version 9"},
		"session":        {mut(`"s-1"`, `"../x"`), "no valid session"},
		"gateway":        {mut(`gw.example:8444`, `gw.example`), "no valid gateway"},
		"pin":            {mut(strings.Repeat("0f", 32), "abc"), "no valid gateway pin"},
		"cert":           {mut("BEGIN CERTIFICATE", "BEGIN NOTHING"), "damaged"},
		"trailing":       {append(append([]byte{}, good...), []byte(" {}")...), "text after the end"},
		"huge":           {make([]byte, MaxSize+1), "too large"},
		"password":       {mut(`"session"`, `"password": "a b\r\npassword 51:b:00", "session"`), "password is damaged"},
		"short password": {mut(`"session"`, `"password": "abc", "session"`), "password is damaged"},
	}
	for name, c := range cases {
		_, err := Parse(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := sample(f).Marshal()
	f.Add(good)
	f.Add([]byte(`{"airlock_rdp":1}`))
	f.Add([]byte(`{}`))
	pw := sample(f)
	pw.Password = "Ab3Cd4Ef5Gh6Jk7Mn8Pq"
	withPw, _ := pw.Marshal()
	f.Add(withPw)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses must give a usable TLS configuration.
		if _, err := p.TLSConfig(); err != nil {
			t.Fatalf("parsed but no TLS config: %v", err)
		}
		if !sessionRe.MatchString(p.Session) || !pinRe.MatchString(p.PinSHA256) || p.Password != "" && !passwordRe.MatchString(p.Password) {
			t.Fatalf("parsed a bad session or pin: %+v", p)
		}
	})
}
