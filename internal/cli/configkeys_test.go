package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/local"
	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/gateway"
)

// TestEveryConfigKeyIsUsed walks every key of the configuration file and
// proves it reaches something that uses it: changing the key alone changes
// what `airlock serve` builds from the file (the gateway's configuration
// with its profiles, the backend, the login chain, the logger), or, for the
// few keys the config package itself consumes (defaults for other keys,
// permissions checked at load), changes what Parse returns or accepts. A
// key that is validated and documented but dropped (as desktop.xvnc,
// description and desktop.vnc_password once were) fails here. The profile
// fields' own journey from the gateway's Profile to the runner's spec and
// the portal is gateway.TestEveryProfileFieldIsUsed.
func TestEveryConfigKeyIsUsed(t *testing.T) {
	keys := configKeys(reflect.TypeFor[config.Config](), "")
	if len(keys) < 100 {
		t.Fatalf("found only %d keys: the walk is broken", len(keys))
	}
	bases := []config.Config{baseConfig(t, "local"), baseConfig(t, "slurm"), baseConfig(t, "kubernetes")}
	for i, b := range bases {
		if r := reach(t, b, true); r.BackendErr != "" || r.AuthErr != "" || r.LoggerErr != "" {
			t.Fatalf("base %d does not build: %+v", i, r)
		}
		if !reflect.DeepEqual(reach(t, b, true), reach(t, b, true)) {
			t.Fatalf("base %d: building twice from one config differs; the walk would prove nothing", i)
		}
	}
	var unused []string
	for _, key := range keys {
		if check, ok := usedInConfig[key]; ok {
			if err := check(t); err != nil {
				unused = append(unused, key+" ("+err.Error()+")")
			}
			continue
		}
		if !reaches(t, bases, key) {
			unused = append(unused, key)
		}
	}
	if len(unused) > 0 {
		t.Errorf("config keys that reach nothing that uses them:\n  %s", strings.Join(unused, "\n  "))
	}
	for key := range usedInConfig {
		if !slices.Contains(keys, key) {
			t.Errorf("usedInConfig names %s, which is no key", key)
		}
	}
}

// secretFileKey matches the keys naming a file of the gateway's secrets:
// the local password file, the cluster's kubeconfig and every *key_file,
// *password_file and *secret_file.
var secretFileKey = regexp.MustCompile(`(^|\.)(file|kubeconfig|[a-z_]*(key|password|secret)_file)$`)

// TestEverySecretFileIsHidden: the workload of a session (running, without
// root, as the gateway's own account) must not read the files holding the
// gateway's secrets, so every key naming one, wherever it points, is in
// what every session's seal hides (gateway.Config.Hide). A secret file key
// added to the configuration without joining secretPaths fails here.
func TestEverySecretFileIsHidden(t *testing.T) {
	var keys []string
	for _, k := range configKeys(reflect.TypeFor[config.Config](), "") {
		if secretFileKey.MatchString(k) {
			keys = append(keys, k)
		}
	}
	for _, want := range []string{"tls.key_file", "auth.methods[].file", "auth.methods[].client_secret_file",
		"auth.methods[].search.bind_password_file", "mail.password_file", "backend.kubernetes.kubeconfig"} {
		if !slices.Contains(keys, want) {
			t.Fatalf("secret file keys %v lack %s: the pattern is broken", keys, want)
		}
	}
	bases := []config.Config{baseConfig(t, "local"), baseConfig(t, "slurm"), baseConfig(t, "kubernetes")}
	for _, key := range keys {
		tried, indexes := false, 1
		if strings.Contains(key, "[]") {
			indexes = 4
		}
		for _, base := range bases {
			for idx := range indexes {
				cfg := deepCopy(base)
				if !mutate(reflect.ValueOf(&cfg).Elem(), strings.Split(key, "."), idx) {
					continue
				}
				tried = true
				hide := gatewayConfig(cfg, "/etc/airlock.yaml", "").Hide
				if !slices.ContainsFunc(hide, func(p string) bool { return strings.HasSuffix(p, "-changed") }) {
					t.Errorf("%s (list index %d, backend %s): the file it names is not hidden from sessions; hidden: %v",
						key, idx, base.Backend.Kind, hide)
				}
			}
		}
		if !tried {
			t.Errorf("%s: in no base config, so not checked", key)
		}
	}
}

// configKeys lists the leaf keys under type t, as "profiles[].desktop.xvnc".
func configKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]():
			out = append(out, configKeys(ft, key+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, configKeys(ft.Elem(), key+"[].")...)
		default:
			out = append(out, key)
		}
	}
	return out
}

// baseConfig is a configuration with every block given: a desktop, an app
// and a vm profile, an image with a share and a volume, local, ldap (with
// search) and header logins, and the local or the Slurm backend.
func baseConfig(t *testing.T, backend string) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.AuditLog = filepath.Join(dir, "audit.log")
	cfg.PublicURL = "https://gw.example:8443"
	cfg.TLS = config.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	// Both backends' blocks, whichever kind is chosen, so that changing
	// backend.kind shows what it chooses.
	cfg.Backend = config.Backend{Kind: backend, Local: &config.LocalBackend{Dir: filepath.Join(dir, "sessions"), Airlock: "/usr/bin/airlock"},
		Slurm: &config.SlurmBackend{Airlock: "/usr/bin/airlock", Partition: "p", Account: "a",
			QOS: "q", SbatchArgs: []string{"--x"}, NodeAddress: "{node}.ib", Output: "/tmp/o", JobPrefix: "al-",
			Poll: time.Second, Reconcile: time.Minute},
		Kubernetes: &config.KubernetesBackend{Kubeconfig: kubeconfig(t, dir), Context: "test", Namespace: "ns", Image: "img:1",
			Airlock: "/usr/bin/airlock", ServiceAccount: "sa", Prefix: "al", GatewayCIDRs: []string{"10.0.0.5/32"},
			GatewayURL: "https://gw.example:9443", Egress: []string{"10.1.0.0/16:443"}, UID: 1000, GID: 1000,
			GracePeriod: 10 * time.Second, Reconcile: time.Minute}}
	desktop := cfg.Profiles[0]
	desktop.Desktop.Programs = [][]string{{"xterm"}}
	app := config.Profile{Name: "app", Title: "App", Kind: "app", App: &config.AppProfile{Command: []string{"app", "{port}"}, Port: 8888},
		CPUs: config.Range[int]{Default: 1, Max: 2}, Memory: config.Range[config.Size]{Default: config.GiB, Max: 2 * config.GiB},
		Lifetime: config.Range[time.Duration]{Default: time.Hour, Max: 2 * time.Hour}, IdleTimeout: config.Range[time.Duration]{Default: time.Hour, Max: 2 * time.Hour}}
	vmp := config.Profile{Name: "vm", Title: "VM", Kind: "vm", VM: &config.VMProfile{Image: "img"},
		Lifetime: config.Range[time.Duration]{Default: time.Hour, Max: 2 * time.Hour}, IdleTimeout: config.Range[time.Duration]{Default: time.Hour, Max: 2 * time.Hour}}
	// A kiosk desktop: its own profile, since a kiosk starts no programs.
	kiosk := deepCopy(config.Config{Profiles: []config.Profile{cfg.Profiles[0]}}).Profiles[0]
	kiosk.Name = "kiosk"
	kiosk.Desktop.Kiosk = &config.KioskProfile{URL: "https://hub.example:8443/", Browser: "chromium",
		Allow: []string{"idp.example:443"}, CAFile: filepath.Join(dir, "hub-ca.pem")}
	cfg.Profiles = []config.Profile{desktop, app, vmp, kiosk}
	if backend == "slurm" {
		for i := range cfg.Profiles {
			cfg.Profiles[i].Slurm = &config.SlurmProfile{Partition: "pp", Account: "pa", QOS: "pq", SbatchArgs: []string{"--y"}}
		}
	}
	if backend == "kubernetes" {
		for i := range cfg.Profiles {
			cfg.Profiles[i].Kubernetes = &config.KubernetesProfile{Image: "img:2", ServiceAccount: "sa2", NodeSelector: []string{"pool=a"},
				Tolerations:  []config.KubernetesToleration{{Key: "k", Operator: "Equal", Value: "v", Effect: "NoSchedule"}},
				Volumes:      []config.KubernetesVolume{{Claim: "home-{user}", MountPath: "/home", SubPath: "s", ReadOnly: false}},
				RuntimeClass: "gvisor", Egress: []string{"192.0.2.7:5432"}}
		}
	}
	cfg.Images = []config.Image{{Name: "img", Path: "/srv/img.qcow2", Format: "qcow2", OS: "linux", Firmware: "bios",
		CPUs: config.Range[int]{Default: 1, Max: 2}, Memory: config.Range[config.Size]{Default: config.GiB, Max: 2 * config.GiB},
		Kernel: "/srv/vmlinuz", Initrd: "/srv/initrd", Append: "console=ttyS0", Share: config.ImageShare{Path: "~"},
		Volumes: []config.ImageVolume{{Path: "/srv/data", Tag: "data"}}, GPU: []string{"0000:01:00.0"}}}
	passwd := filepath.Join(dir, "passwd")
	f, err := local.Open(passwd)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Add("alice", []byte("correct horse"), false); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	bindPW := filepath.Join(dir, "bind.pw")
	if err := os.WriteFile(bindPW, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth.Methods = []config.AuthMethod{
		{Kind: "local", File: passwd, AdminUsers: []string{"root"}},
		{Kind: "ldap", URL: "ldaps://ldap.example", CAFile: ca, BindDNTemplate: "uid={user},dc=example", AdminGroup: "cn=admins",
			GroupsBaseDN: "ou=groups,dc=example",
			Timeout:      5 * time.Second, AdminUsers: []string{"root"}},
		{Kind: "ldap", URL: "ldaps://ldap2.example", CAFile: ca, AdminGroup: "cn=admins", Timeout: 5 * time.Second,
			Search: &config.LDAPSearch{BindDN: "cn=svc", BindPasswordFile: bindPW, BaseDN: "dc=example", Filter: "(uid={user})"}},
		{Kind: "header", Header: "X-Remote-User", TrustedProxies: []string{"127.0.0.1"}, AdminUsers: []string{"root"}},
	}
	if backend == "slurm" {
		// The walk mutates the first four methods only: this base has an
		// OpenID provider where the other has its second directory.
		cfg.Auth.Methods[2] = config.AuthMethod{Kind: "oidc", Name: "idp", Title: "IdP", Issuer: "https://idp.example", ClientID: "airlock",
			ClientSecretFile: bindPW, Scopes: []string{"profile"}, UserClaim: "preferred_username", UserDomain: "example.org",
			GroupsClaim: "groups", AdminGroups: []string{"admins"}, AdminUsers: []string{"root"}}
		// And login links by e-mail where the other has its password file
		// (which the local base reaches).
		cfg.Auth.Methods[0] = config.AuthMethod{Kind: "email", Domains: []string{"example.org"}, LinkTTL: time.Minute,
			PerAddress: 2, PerClient: 5, Window: time.Hour, AdminUsers: []string{"root"}}
		// And a mail server where the other has the header method.
		cfg.Auth.Methods[3] = config.AuthMethod{Kind: "imap", URL: "imaps://mail.example", CAFile: ca, MinTLS: "1.2",
			Login: "{user}@example.org", Timeout: 5 * time.Second, AdminUsers: []string{"root"}}
	}
	cfg.Mail = &config.MailRelay{Relay: "smtp://relay.example:587", CAFile: ca, MinTLS: "1.2", From: "airlock <airlock@example.org>",
		User: "airlock", PasswordFile: bindPW, Timeout: 20 * time.Second}
	return cfg
}

// reached is everything serve builds from a config before it runs.
type reached struct {
	Gateway        any
	Backend        any
	BackendErr     string
	RegisterURL    string
	Auth, Header   any
	AuthErr        string
	OIDC           []string
	Mailer         string
	EmailLogin     any
	Logger         any
	LoggerErr      string
	GatewayProfile []any
	Store          string
}

var pointerRE = regexp.MustCompile(`0x[0-9a-f]+`)

// configView is what a component was configured with: its cfg field (or
// the whole of it) as text, without pointers, so that run-time state
// (semaphores, channels, loggers, certificate pools) does not count.
func configView(x any) string {
	v := reflect.ValueOf(x)
	if !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return "nil"
	}
	if v.Kind() == reflect.Pointer {
		if f := v.Elem().FieldByName("cfg"); f.IsValid() {
			return pointerRE.ReplaceAllString(fmt.Sprintf("%T %+v", x, f), "0x")
		}
	}
	return pointerRE.ReplaceAllString(fmt.Sprintf("%T %+v", x, x), "0x")
}

// authView is the login chain's authenticators' configurations and its
// rate limiter.
func authView(c *auth.Chain) any {
	if c == nil {
		return nil
	}
	var out []string
	for _, a := range c.Authenticators {
		out = append(out, configView(a))
	}
	return struct {
		Authenticators []string
		Limiter        any
	}{out, c.Limiter}
}

// reach builds what serve builds from cfg. The login chain (whose local
// password file costs an Argon2 hash to open) is built only for auth keys:
// it reads nothing else.
func reach(t *testing.T, cfg config.Config, withAuth bool) reached {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	var r reached
	be, url, err := backendFromConfig(cfg, log)
	r.Backend, r.RegisterURL = configView(be), url
	if err != nil {
		r.BackendErr = err.Error()
	}
	r.Gateway = gatewayConfig(cfg, "/etc/airlock.yaml", url)
	pg, path := storeOptions(cfg)
	r.Store = configView(pg) + path
	if withAuth {
		chain, hdr, err := authFromConfig(&Env{Stdout: io.Discard, Stderr: io.Discard}, cfg, log)
		r.Auth, r.Header = authView(chain), configView(hdr)
		if err != nil {
			r.AuthErr = err.Error()
		}
		ps, err := oidcFromConfig(cfg, log)
		for _, p := range ps {
			r.OIDC = append(r.OIDC, configView(p))
		}
		if err != nil {
			r.AuthErr += err.Error()
		}
	}
	// The relay is built with or without auth keys: mail.* is not under
	// auth, and auth's email method needs it.
	m, el, err := mailFromConfig(cfg)
	r.Mailer, r.EmailLogin = configView(m), configView(el)
	if err != nil {
		r.AuthErr += err.Error()
	}
	lg, err := newLogger(io.Discard, cfg.Log)
	r.Logger = lg
	if err != nil {
		r.LoggerErr = err.Error()
	}
	return r
}

// reaches: changing key alone, in some base and at some index of each
// list, changes what serve builds.
func reaches(t *testing.T, bases []config.Config, key string) bool {
	withAuth := strings.HasPrefix(key, "auth.")
	for _, base := range bases {
		before := reach(t, base, withAuth)
		for idx := range 4 {
			cfg := deepCopy(base)
			if !mutate(reflect.ValueOf(&cfg).Elem(), strings.Split(key, "."), idx) {
				continue
			}
			if !reflect.DeepEqual(before, reach(t, cfg, withAuth)) {
				return true
			}
		}
	}
	return false
}

// deepCopy copies a config through its own encoding-free shape: every
// slice, map and pointer is new, so mutating the copy leaves base alone.
func deepCopy(c config.Config) config.Config {
	v := reflect.New(reflect.TypeOf(c)).Elem()
	copyValue(v, reflect.ValueOf(c))
	return v.Interface().(config.Config)
}

func copyValue(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if !src.IsNil() {
			p := reflect.New(src.Elem().Type())
			copyValue(p.Elem(), src.Elem())
			dst.Set(p)
		}
	case reflect.Slice:
		if !src.IsNil() {
			s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
			for i := range src.Len() {
				copyValue(s.Index(i), src.Index(i))
			}
			dst.Set(s)
		}
	case reflect.Struct:
		for i := range src.NumField() {
			if dst.Field(i).CanSet() {
				copyValue(dst.Field(i), src.Field(i))
			}
		}
	default:
		dst.Set(src)
	}
}

// mutate changes the value at path (yaml names; "x[]" takes element idx,
// or element 0 below the first list) to another of its type. It reports
// false when the path is absent there (a nil block, a short list).
func mutate(v reflect.Value, path []string, idx int) bool {
	name, list := strings.CutSuffix(path[0], "[]")
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return false
		}
		v = v.Elem()
	}
	var f reflect.Value
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if tag == name {
			f = v.Field(i)
		}
	}
	if !f.IsValid() {
		return false
	}
	if list {
		if f.Len() <= idx {
			return false
		}
		f = f.Index(idx)
		idx = 0
	}
	if len(path) > 1 {
		return mutate(f, path[1:], idx)
	}
	for f.Kind() == reflect.Pointer {
		if f.IsNil() {
			return false
		}
		f = f.Elem()
	}
	switch {
	case f.Type() == reflect.TypeFor[config.Size]():
		f.SetInt(f.Int() + int64(config.GiB))
	case f.Type() == reflect.TypeFor[time.Duration]():
		f.SetInt(f.Int() + int64(time.Hour))
	case f.Kind() == reflect.String:
		if other, ok := otherChoice[f.String()]; ok && (name == "kind" || name == "format") {
			f.SetString(other) // a choice: the other one (an unknown one is the default's)
		} else {
			f.SetString(f.String() + "-changed")
		}
	case f.Kind() == reflect.Bool:
		f.SetBool(!f.Bool())
	case f.CanInt():
		f.SetInt(f.Int() + 1)
	case f.CanFloat():
		f.SetFloat(f.Float() + 0.5)
	case f.Kind() == reflect.Slice:
		f.Set(reflect.Append(f, reflect.New(f.Type().Elem()).Elem()))
	default:
		panic(fmt.Sprintf("mutate: %s: type %s", name, f.Type()))
	}
	return true
}

// otherChoice is, for a key that chooses, another valid choice.
var otherChoice = map[string]string{"local": "slurm", "slurm": "local", "text": "json", "json": "text"}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// usedInConfig are the keys the config package consumes itself: defaults
// for other keys, and permissions checked at load. Each check proves the
// key changes what Parse returns or accepts.
var usedInConfig = map[string]func(t *testing.T) error{
	// The bases run on SQLite, where a driver other than postgres and a
	// dsn mean nothing (validate refuses them): they must reach what is
	// opened once the driver is postgres.
	"store.driver": func(t *testing.T) error {
		if pg, path := storeOptions(config.Config{Store: config.Store{Driver: "postgres", DSN: "dbname=a"}}); pg == nil || path != "" {
			return errors.New("driver postgres does not open PostgreSQL")
		}
		return nil
	},
	"store.dsn": func(t *testing.T) error {
		if pg, _ := storeOptions(config.Config{Store: config.Store{Driver: "postgres", DSN: "dbname=a"}}); pg == nil || pg.DSN != "dbname=a" {
			return errors.New("dsn does not reach the PostgreSQL store")
		}
		return nil
	},
	// A choice that matters only with rdp and an RDP port, which the base
	// configs lack: it must reach the image the gateway gets (whose use
	// gateway.TestEveryProfileFieldIsUsed proves).
	"images[].rdp_password": func(t *testing.T) error {
		img := []config.Image{{Name: "img", RDP: true, RDPPassword: "generate"}}
		p := withImage(gateway.Profile{Kind: "vm"}, config.Profile{Kind: "vm", VM: &config.VMProfile{Image: "img"}}, img)
		if p.VM == nil || !p.VM.RDPPassword {
			return errors.New("rdp_password: generate does not reach the gateway's image")
		}
		return nil
	},
	"limits.lifetime_default": func(t *testing.T) error {
		return parsedDiffers(t, "limits: {lifetime_default: 3h}\n", func(c config.Config) any { return c.Profiles[0].Lifetime.Default })
	},
	"limits.lifetime_max": func(t *testing.T) error {
		return parsedDiffers(t, "limits: {lifetime_max: 30h}\n", func(c config.Config) any { return c.Profiles[0].Lifetime.Max })
	},
	"limits.idle_timeout_default": func(t *testing.T) error {
		return parsedDiffers(t, "limits: {idle_timeout_default: 3h}\n", func(c config.Config) any { return c.Profiles[0].IdleTimeout.Default })
	},
	"limits.idle_timeout_max": func(t *testing.T) error {
		return parsedDiffers(t, "limits: {idle_timeout_max: 9h}\n", func(c config.Config) any { return c.Profiles[0].IdleTimeout.Max })
	},
	"profiles[].idle_timeout.max": func(t *testing.T) error {
		// Only a bound on the default: a launch cannot choose its idle
		// timeout (yet).
		p := "profiles:\n  - {name: d, kind: desktop, idle_timeout: {default: 3h, max: %s}}\n"
		if _, err := config.Parse("t.yaml", fmt.Appendf(nil, p, "2h")); err == nil {
			return fmt.Errorf("a default above max accepted")
		}
		if _, err := config.Parse("t.yaml", fmt.Appendf(nil, p, "4h")); err != nil {
			return fmt.Errorf("a default below max refused: %v", err)
		}
		return nil
	},
	"run_as_shared": func(t *testing.T) error {
		// A fixed run_as shared by every user is refused unless the site
		// says it knows.
		if _, err := config.Parse("t.yaml", []byte("run_as: nobody\n")); err == nil {
			return fmt.Errorf("run_as without run_as_shared accepted")
		}
		if _, err := config.Parse("t.yaml", []byte("run_as: nobody\nrun_as_shared: true\n")); err != nil {
			return fmt.Errorf("run_as with run_as_shared refused: %v", err)
		}
		return nil
	},
}

// parsedDiffers: the YAML snippet changes what get reads from the parsed
// configuration, against the defaults.
func parsedDiffers(t *testing.T, yaml string, get func(config.Config) any) error {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		return err
	}
	if reflect.DeepEqual(get(c), get(config.Default())) {
		return fmt.Errorf("%q changes nothing", yaml)
	}
	return nil
}

// kubeconfig writes a kubeconfig with a context "test" (nothing listens
// at its server: building the backend asks nothing of it).
func kubeconfig(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "kubeconfig")
	kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: "t"}}]
contexts: [{name: test, context: {cluster: c, user: u}}]
current-context: test
`
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
