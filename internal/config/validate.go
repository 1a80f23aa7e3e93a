package config

import (
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend/kubernetes/egress"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/egressproxy"
)

// validator checks a decoded Config, citing the line of each offending
// key from the decoder's lines (or of the nearest enclosing key the file
// has, for a key it lacks).
type validator struct {
	file  string
	lines map[string]int
	set   map[string]bool
	errs  Errors
}

func (v *validator) errorf(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) line(key string) int {
	for {
		if l, ok := v.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
}

// keep returns the validator's errors, less those about a key the decoder
// already found wrong (or inside one): they would repeat it.
func (v *validator) keep(decoded Errors) Errors {
	var out Errors
	for _, e := range v.errs {
		if !slices.ContainsFunc(decoded, func(d *Error) bool { return within(e.Key, d.Key) }) {
			out = append(out, e)
		}
	}
	return out
}

func (v *validator) config(c *Config) {
	if err := checkListen(c.Listen); err != nil {
		v.errorf("listen", "%q: %v", c.Listen, err)
	}
	if c.Recordings.Retention < time.Hour {
		v.errorf("recordings.retention", "%s; want at least 1h", c.Recordings.Retention)
	}
	if d := c.Recordings.Dir; d != "" && (!filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/") {
		v.errorf("recordings.dir", "%q is not a clean absolute path below /", d)
	}
	if c.Recordings.MaxSize < MiB {
		v.errorf("recordings.max_size", "%s; want at least 1M", show(c.Recordings.MaxSize))
	}
	if c.RDP.Listen != "" {
		if err := checkListen(c.RDP.Listen); err != nil {
			v.errorf("rdp.listen", "%q: %v", c.RDP.Listen, err)
		}
	}
	if c.RDP.Address != "" {
		if _, port, err := net.SplitHostPort(c.RDP.Address); err != nil || port == "" || port == "0" {
			v.errorf("rdp.address", "%q: want host:port, as clients dial it", c.RDP.Address)
		}
	}
	if c.RDP.MaxCertLifetime < time.Minute {
		v.errorf("rdp.max_cert_lifetime", "%s: want at least 1m", c.RDP.MaxCertLifetime)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		v.errorf("state_dir", "%q is not an absolute path", c.StateDir)
	}
	if a := c.Store.PeerAddress; a != "" {
		if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" || p == "0" {
			v.errorf("store.peer_address", "%q is not HOST:PORT (the address the other gateways reach this one at)", a)
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			v.errorf("public_url", "%q is not an address like https://airlock.example.org or https://host/prefix", c.PublicURL)
		}
	}
	v.runAs(c)
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		v.errorf("tls.key_file", "required with cert_file")
	case c.TLS.CertFile == "" && c.TLS.KeyFile != "":
		v.errorf("tls.cert_file", "required with key_file")
	}
	v.store(&c.Store)
	v.apps(c)
	v.backend(&c.Backend)
	v.limits(&c.Limits)
	v.atLeast("forward.max_per_user", c.Forward.MaxPerUser, 0)
	v.atLeast("forward.bytes_per_second", c.Forward.BytesPerSecond, 0)
	if c.Forward.BytesPerSecond > 0 && c.Forward.BytesPerSecond < 64*KiB {
		v.errorf("forward.bytes_per_second", "%s; want 0 (no cap) or at least 64K, or a page would take seconds", show(c.Forward.BytesPerSecond))
	}
	v.atLeast("forward.max_streams", c.Forward.MaxStreams, 1)
	if c.Forward.Grace < time.Second {
		v.errorf("forward.grace", "%s; want at least 1s, or every network blink ends forwards", show(c.Forward.Grace))
	}
	v.images(c.Images)
	v.profiles(c)
	v.auth(&c.Auth, c.Mail != nil, c.PublicURL != "")
	if c.Mail != nil {
		v.relay(c.Mail)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		v.errorf("log.format", "%q; want text or json", c.Log.Format)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		v.errorf("log.level", "%q; want debug, info, warn or error", c.Log.Level)
	}
}

// store checks the database: sqlite takes no other key, postgres needs a
// DSN with no password written in it (secrets live in files).
func (v *validator) store(s *Store) {
	switch s.Driver {
	case "sqlite":
		if s.DSN != "" || s.PasswordFile != "" {
			v.errorf("store.dsn", "sqlite keeps its database in state_dir/airlock.db; dsn and password_file are for driver postgres")
		}
	case "postgres":
		switch {
		case s.DSN == "":
			v.errorf("store.dsn", "required with driver postgres, such as \"host=/run/postgresql dbname=airlock user=airlock\"")
		case dsnHasPassword(s.DSN):
			v.errorf("store.dsn", "holds a password; secrets are never written inline: put it in store.password_file")
		}
	default:
		v.errorf("store.driver", "%q; want sqlite or postgres", s.Driver)
	}
}

// dsnHasPassword reports whether a PostgreSQL DSN may carry a password: a
// URL with a colon before its last @ (user:password@; the driver splits
// URLs its own way, so any such colon counts), or the word password
// anywhere (a query parameter, a key=value word). It errs on the side of
// refusing: FuzzDSNHasPassword checks that nothing the driver reads a
// password from gets through.
func dsnHasPassword(dsn string) bool {
	// Percent-decoded (repeatedly) too: a URL's query names are decoded
	// by the driver, "pass%77ord" is password.
	for s := dsn; ; {
		if strings.Contains(strings.ToLower(s), "password") {
			return true
		}
		u := unescapeValid(s)
		if u == s {
			break
		}
		s = u
	}
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		if rest, ok := strings.CutPrefix(dsn, scheme); ok {
			at := strings.LastIndexByte(rest, '@')
			return at >= 0 && strings.Contains(rest[:at], ":")
		}
	}
	return false
}

// unescapeValid decodes each valid %XX in s and keeps the rest as it is,
// as a lenient URL query parser does with a malformed query.
func unescapeValid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var jobPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// runAs checks run_as: a user name or a template with {user}; a fixed
// name is one account for every portal user, which a site must accept in
// so many words.
func (v *validator) runAs(c *Config) {
	template := strings.Contains(c.RunAs, "{user}")
	switch {
	case c.RunAs == "":
		if c.RunAsShared {
			v.errorf("run_as_shared", "true needs a fixed run_as account to share")
		}
	case !userName.MatchString(strings.ReplaceAll(c.RunAs, "{user}", "u")):
		v.errorf("run_as", "%q is not a user name (or a template like airlock-{user})", c.RunAs)
	case template && c.RunAsShared:
		v.errorf("run_as_shared", "true, but run_as %q gives each portal user an account of their own", c.RunAs)
	case !template && !c.RunAsShared:
		v.errorf("run_as", "%q is one Unix account for every portal user: their sessions could read and change each other's files; "+
			"leave it empty (each user's own account), use a template like airlock-{user}, or set run_as_shared: true to accept that", c.RunAs)
	}
}

var userName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

func (v *validator) backend(b *Backend) {
	switch b.Kind {
	case "local":
		if b.Local != nil && b.Local.Dir == "" {
			v.errorf("backend.local.dir", "empty; want a directory for per-session files")
		}
	case "slurm":
		if b.Slurm == nil {
			v.errorf("backend.slurm", "required with kind slurm")
			return
		}
		if b.Slurm.Airlock == "" {
			v.errorf("backend.slurm.airlock", "empty; want the path of airlock on the compute nodes")
		}
		v.nonEmpty("backend.slurm.sbatch_args", b.Slurm.SbatchArgs)
		if g := b.Slurm.GatewayURL; g != "" {
			if u, err := url.Parse(g); err != nil || u.Scheme != "https" || u.Host == "" {
				v.errorf("backend.slurm.gateway_url", "%q is not an address like https://gateway.example.org:8443", g)
			}
		}
		if !strings.Contains(b.Slurm.NodeAddress, "{node}") {
			v.errorf("backend.slurm.node_address", "%q must contain {node}", b.Slurm.NodeAddress)
		}
		if !jobPrefixRE.MatchString(b.Slurm.JobPrefix) {
			v.errorf("backend.slurm.job_prefix", "%q; want 1 to 32 of a-z, A-Z, 0-9, _ and -", b.Slurm.JobPrefix)
		}
		if b.Slurm.Output == "" {
			v.errorf("backend.slurm.output", "empty; want a path pattern or /dev/null")
		}
		if b.Slurm.Poll < 100*time.Millisecond {
			v.errorf("backend.slurm.poll", "%s; want at least 100ms", b.Slurm.Poll)
		}
		if b.Slurm.Reconcile < time.Second {
			v.errorf("backend.slurm.reconcile", "%s; want at least 1s", b.Slurm.Reconcile)
		}
	case "kubernetes":
		if b.Kubernetes == nil {
			v.errorf("backend.kubernetes", "required with kind kubernetes")
			return
		}
		v.kubernetes(b.Kubernetes)
	default:
		v.errorf("backend.kind", "%q; want %s", b.Kind, orList(backendKinds))
		return
	}
	if b.Kind != "local" && b.Local != nil {
		v.errorf("backend.local", "only for kind local, and this is kind %s", b.Kind)
	}
	if b.Kind != "slurm" && b.Slurm != nil {
		v.errorf("backend.slurm", "only for kind slurm, and this is kind %s", b.Kind)
	}
	if b.Kind != "kubernetes" && b.Kubernetes != nil {
		v.errorf("backend.kubernetes", "only for kind kubernetes, and this is kind %s", b.Kind)
	}
}

// dnsLabel is a Kubernetes namespace name (RFC 1123 label); objectPrefix
// leaves room in one for "-" and a session id.
var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	objectPrefix = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$`)
	labelKey     = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValue   = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

func (v *validator) kubernetes(k *KubernetesBackend) {
	const at = "backend.kubernetes"
	if !dnsLabel.MatchString(k.Namespace) {
		v.errorf(at+".namespace", "%q; want a namespace name: 1 to 63 of a-z, 0-9 and -", k.Namespace)
	}
	if strings.TrimSpace(k.Image) == "" {
		v.errorf(at+".image", "empty; want the image with airlock and the profiles' programs")
	}
	if k.Airlock == "" {
		v.errorf(at+".airlock", "empty; want the path of airlock in the image")
	}
	if !objectPrefix.MatchString(k.Prefix) {
		v.errorf(at+".prefix", "%q; want 1 to 32 of a-z, 0-9 and -, starting and ending with a letter or digit", k.Prefix)
	}
	if len(k.GatewayCIDRs) == 0 {
		v.errorf(at+".gateway_cidrs", "empty; want the gateway's addresses as the pods see them (10.0.0.5/32): the only peers a session's pod admits")
	}
	for i, c := range k.GatewayCIDRs {
		if p, err := netip.ParsePrefix(c); err != nil || p.Masked() != p {
			v.errorf(fmt.Sprintf("%s.gateway_cidrs[%d]", at, i), "%q is not a network like 10.0.0.5/32", c)
		}
	}
	if g := k.GatewayURL; g != "" {
		if u, err := url.Parse(g); err != nil || u.Scheme != "https" || u.Host == "" {
			v.errorf(at+".gateway_url", "%q is not an address like https://gateway.example.org:8443", g)
		}
	}
	v.egress(at+".egress", k.Egress)
	v.atLeast(at+".uid", k.UID, 1)
	v.atLeast(at+".gid", k.GID, 1)
	if k.GracePeriod < 0 {
		v.errorf(at+".grace_period", "%s; want 0 or more", k.GracePeriod)
	}
	if k.Reconcile < time.Second {
		v.errorf(at+".reconcile", "%s; want at least 1s", k.Reconcile)
	}
}

func (v *validator) egress(key string, list []string) {
	for i, e := range list {
		if _, err := egress.Parse(e); err != nil {
			v.errorf(fmt.Sprintf("%s[%d]", key, i), "%v", err)
		}
	}
}

func (v *validator) kubernetesProfile(at string, k *KubernetesProfile) {
	for i, kv := range k.NodeSelector {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !labelKey.MatchString(key) || !labelValue.MatchString(val) {
			v.errorf(fmt.Sprintf("%s.node_selector[%d]", at, i), "%q; want KEY=VALUE with a node label's key and value", kv)
		}
	}
	for i, t := range k.Tolerations {
		key := fmt.Sprintf("%s.tolerations[%d]", at, i)
		switch t.Operator {
		case "", "Equal":
			if t.Key == "" {
				v.errorf(key+".key", "empty; only operator Exists may leave it out")
			}
		case "Exists":
			if t.Value != "" {
				v.errorf(key+".value", "%q; operator Exists takes no value", t.Value)
			}
		default:
			v.errorf(key+".operator", "%q; want Equal or Exists", t.Operator)
		}
		if t.Key != "" && !labelKey.MatchString(t.Key) {
			v.errorf(key+".key", "%q is not a taint key", t.Key)
		}
		if !slices.Contains([]string{"", "NoSchedule", "PreferNoSchedule", "NoExecute"}, t.Effect) {
			v.errorf(key+".effect", "%q; want NoSchedule, PreferNoSchedule or NoExecute", t.Effect)
		}
	}
	for i, vol := range k.Volumes {
		key := fmt.Sprintf("%s.volumes[%d]", at, i)
		if vol.Claim == "" {
			v.errorf(key+".claim", "empty; want a PersistentVolumeClaim's name ({user} is the session's owner)")
		}
		if !filepath.IsAbs(vol.MountPath) || filepath.Clean(vol.MountPath) != vol.MountPath {
			v.errorf(key+".mount_path", "%q; want a clean absolute path", vol.MountPath)
		}
		if vol.SubPath != "" && (filepath.IsAbs(vol.SubPath) || slices.Contains(strings.Split(vol.SubPath, "/"), "..")) {
			v.errorf(key+".sub_path", "%q; want a relative path inside the volume", vol.SubPath)
		}
	}
	v.egress(at+".egress", k.Egress)
}

func (v *validator) nonEmpty(key string, ss []string) {
	for i, s := range ss {
		if strings.TrimSpace(s) == "" {
			v.errorf(fmt.Sprintf("%s[%d]", key, i), "empty")
		}
	}
}

func (v *validator) limits(l *Limits) {
	v.atLeast("limits.max_sessions", l.MaxSessions, 0)
	v.atLeast("limits.max_sessions_per_user", l.MaxSessionsPerUser, 0)
	if l.MaxSessions > 0 && l.MaxSessionsPerUser > l.MaxSessions {
		v.errorf("limits.max_sessions_per_user", "%d is more than max_sessions %d", l.MaxSessionsPerUser, l.MaxSessions)
	}
	if math.IsNaN(l.MaxLoad) || math.IsInf(l.MaxLoad, 0) || l.MaxLoad < 0 {
		v.errorf("limits.max_load", "%v; want a load per CPU such as 2.0, or 0 for no check", l.MaxLoad)
	}
	v.atLeast("limits.min_free_memory", l.MinFreeMemory, 0)
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"limits.lifetime_default", l.LifetimeDefault},
		{"limits.lifetime_max", l.LifetimeMax},
		{"limits.idle_timeout_default", l.IdleTimeoutDefault},
		{"limits.idle_timeout_max", l.IdleTimeoutMax},
		{"limits.single_shot_grace", l.SingleShotGrace},
	} {
		v.atLeast(d.key, d.d, 0)
	}
	checkRange(v, "limits.lifetime_default", "limits.lifetime_max", l.LifetimeDefault, l.LifetimeMax, true)
	checkRange(v, "limits.idle_timeout_default", "limits.idle_timeout_max", l.IdleTimeoutDefault, l.IdleTimeoutMax, true)
}

// show writes a value as the file would.
func show[T int | Size | time.Duration](x T) string {
	switch x := any(x).(type) {
	case time.Duration:
		return formatDuration(x)
	case Size:
		return x.String()
	}
	return fmt.Sprint(x)
}

func (v *validator) atLeastAny(key string, x, low int64, shown string) {
	if x < low {
		v.errorf(key, "%s; want at least %d", shown, low)
	}
}

func (v *validator) atLeast(key string, x any, low int64) {
	switch x := x.(type) {
	case int:
		v.atLeastAny(key, int64(x), low, show(x))
	case Size:
		v.atLeastAny(key, int64(x), low, show(x))
	case time.Duration:
		v.atLeastAny(key, int64(x), low, show(x))
	}
}

// checkRange checks that a default is within its maximum, where a zero
// maximum means none. zeroNone says a zero default means "no limit",
// which no maximum allows. The error goes to the key the file set.
func checkRange[T int | Size | time.Duration](v *validator, defKey, maxKey string, def, max T, zeroNone bool) {
	if max <= 0 || def < 0 {
		return
	}
	shown := show(def)
	if def == 0 && zeroNone {
		shown = "0 (no limit)"
	} else if def <= max {
		return
	}
	if !v.set[maxKey] && v.set[defKey] {
		v.errorf(defKey, "%s is above %s %s", shown, short(maxKey), show(max))
	} else {
		v.errorf(maxKey, "%s is below %s %s", show(max), short(defKey), shown)
	}
}

// short is the last part of a key path.
func short(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }

var profileName = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

func (v *validator) profiles(c *Config) {
	if len(c.Profiles) == 0 {
		v.errorf("profiles", "empty; users could launch nothing")
	}
	first := map[string]string{}
	for i := range c.Profiles {
		p := &c.Profiles[i]
		at := fmt.Sprintf("profiles[%d]", i)
		v.uniqueName(at, "profile", p.Name, first)
		v.nonEmpty(at+".groups", p.Groups)
		if len(p.Groups) > 0 && !slices.ContainsFunc(c.Auth.Methods, func(m AuthMethod) bool {
			return m.Kind == "oidc" || m.Kind == "ldap" && m.GroupsBaseDN != ""
		}) {
			v.errorf(at+".groups", "no auth method says which groups users are in (kind oidc, or ldap with groups_base_dn): nobody could launch this profile")
		}
		v.clipboard(at, p, c.Images, c.RDP.Listen)
		switch p.Kind {
		case "desktop":
			v.desktop(at+".desktop", p)
		case "app":
			v.app(at+".app", p)
		case "vm":
			v.vmProfile(at, p, c.Images)
		case "":
			v.errorf(at+".kind", "required: want %s", orList(profileKinds))
			continue
		default:
			v.errorf(at+".kind", "%q; want %s", p.Kind, orList(profileKinds))
			continue
		}
		for _, k := range profileKinds {
			if k == p.Kind {
				continue
			}
			if k == "desktop" && p.Desktop != nil || k == "app" && p.App != nil || k == "vm" && p.VM != nil {
				v.errorf(at+"."+k, "only for kind %s, and this is kind %s", k, p.Kind)
			}
		}
		if p.CPUs.Default < 1 {
			v.errorf(at+".cpus.default", "%d; want at least 1", p.CPUs.Default)
		}
		v.atLeast(at+".cpus.max", p.CPUs.Max, 0)
		checkRange(v, at+".cpus.default", at+".cpus.max", p.CPUs.Default, p.CPUs.Max, false)
		v.atLeast(at+".memory.default", p.Memory.Default, 0)
		v.atLeast(at+".memory.max", p.Memory.Max, 0)
		checkRange(v, at+".memory.default", at+".memory.max", p.Memory.Default, p.Memory.Max, true)
		v.profileTime(at+".lifetime", p.Lifetime, c.Limits.LifetimeMax, "limits.lifetime_max")
		v.profileTime(at+".idle_timeout", p.IdleTimeout, c.Limits.IdleTimeoutMax, "limits.idle_timeout_max")
		if p.Slurm != nil {
			if c.Backend.Kind != "slurm" {
				v.errorf(at+".slurm", "only for backend kind slurm, and backend.kind is %s", c.Backend.Kind)
			}
			v.nonEmpty(at+".slurm.sbatch_args", p.Slurm.SbatchArgs)
		}
		if p.Kubernetes != nil {
			if c.Backend.Kind != "kubernetes" {
				v.errorf(at+".kubernetes", "only for backend kind kubernetes, and backend.kind is %s", c.Backend.Kind)
			}
			v.kubernetesProfile(at+".kubernetes", p.Kubernetes)
		}
	}
}

// profileTime checks a profile's lifetime or idle timeout, unless both
// halves came from limits (which are checked there).
func (v *validator) profileTime(key string, r Range[time.Duration], limit time.Duration, limitKey string) {
	if !v.set[key+".default"] && !v.set[key+".max"] {
		return
	}
	v.atLeast(key+".default", r.Default, 0)
	v.atLeast(key+".max", r.Max, 0)
	checkRange(v, key+".default", key+".max", r.Default, r.Max, true)
	if limit > 0 && (r.Max == 0 || r.Max > limit) {
		shown := show(r.Max)
		if r.Max == 0 {
			shown = "0 (no maximum)"
		}
		v.errorf(key+".max", "%s is above %s %s", shown, limitKey, show(limit))
	}
}

var geometry = regexp.MustCompile(`^([0-9]{1,5})x([0-9]{1,5})$`)

func (v *validator) desktop(at string, p *Profile) {
	d := p.Desktop
	if d == nil {
		d = defaultProfile("desktop").Desktop
	}
	ok := false
	if m := geometry.FindStringSubmatch(d.Geometry); m != nil {
		w, _ := strconv.Atoi(m[1])
		h, _ := strconv.Atoi(m[2])
		ok = 64 <= w && w <= 8192 && 64 <= h && h <= 8192
	}
	if !ok {
		v.errorf(at+".geometry", "%q; want WIDTHxHEIGHT, each 64 to 8192, such as 1280x800", d.Geometry)
	}
	if !slices.Contains([]int{8, 16, 24, 32}, d.Depth) {
		v.errorf(at+".depth", "%d; want 8, 16, 24 or 32", d.Depth)
	}
	for i, argv := range d.Programs {
		if len(argv) == 0 || argv[0] == "" {
			v.errorf(fmt.Sprintf("%s.programs[%d]", at, i), "empty; want a program and its arguments, such as [xterm]")
		}
	}
	if d.Xvnc == "" {
		v.errorf(at+".xvnc", "empty; want the Xvnc program")
	}
	switch {
	case d.RDPServer != "xrdp" && d.RDPServer != "shadow":
		v.errorf(at+".rdp_server", "%q; want xrdp or shadow", d.RDPServer)
	case d.RDPServer == "shadow" && !d.RDP:
		v.errorf(at+".rdp_server", "shadow only with rdp: true (it is the RDP server rdp starts)")
	}
	if d.Kiosk != nil {
		v.kiosk(at+".kiosk", d.Kiosk)
	}
}

func (v *validator) kiosk(at string, k *KioskProfile) {
	u, err := url.Parse(k.URL)
	switch {
	case k.URL == "":
		v.errorf(at+".url", "required: the site the kiosk shows, such as https://jupyter.example.org/")
	case err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil:
		v.errorf(at+".url", "%q; want an https:// URL with a host and no user (the kiosk's proxy only tunnels TLS)", k.URL)
	default:
		port := u.Port()
		if port == "" {
			port = "443"
		}
		if _, _, err := egressproxy.SplitTarget(net.JoinHostPort(u.Hostname(), port)); err != nil {
			v.errorf(at+".url", "%q: %v", k.URL, err)
		}
	}
	switch k.Browser {
	case "chromium", "firefox":
	default:
		v.errorf(at+".browser", "%q; want chromium or firefox", k.Browser)
	}
	for i, a := range k.Allow {
		if _, _, err := egressproxy.SplitTarget(a); err != nil {
			v.errorf(fmt.Sprintf("%s.allow[%d]", at, i), "%q: %v", a, err)
		}
	}
	if k.CAFile != "" && (!filepath.IsAbs(k.CAFile) || filepath.Clean(k.CAFile) != k.CAFile) {
		v.errorf(at+".ca_file", "%q is not a clean absolute path", k.CAFile)
	}
}

var placeholder = regexp.MustCompile(`\{[a-z_]+\}`)

func (v *validator) app(at string, p *Profile) {
	a := p.App
	if a == nil {
		v.errorf(at, "required with kind app: command, and port or socket")
		return
	}
	if len(a.Command) == 0 || a.Command[0] == "" {
		v.errorf(at+".command", "required: the program serving HTTP and its arguments")
	}
	used := map[string]bool{}
	for i, arg := range a.Command {
		for _, ph := range placeholder.FindAllString(arg, -1) {
			used[ph] = true
			if !slices.Contains([]string{"{port}", "{socket}", "{prefix}"}, ph) {
				v.errorf(fmt.Sprintf("%s.command[%d]", at, i), "unknown placeholder %s; want {port}, {socket} or {prefix}", ph)
			}
		}
	}
	switch {
	case a.Port == 0 && a.Socket == "":
		v.errorf(at, "set port or socket: where the app listens")
	case a.Port != 0 && a.Socket != "":
		v.errorf(at+".socket", "set port or socket, not both")
	case a.Port < 0 || a.Port > 65535:
		v.errorf(at+".port", "%d; want 1 to 65535", a.Port)
	case a.Socket != "" && !filepath.IsAbs(a.Socket):
		v.errorf(at+".socket", "%q is not an absolute path", a.Socket)
	case len(a.Socket) > 107:
		v.errorf(at+".socket", "%d bytes long; a UNIX socket path has at most 107", len(a.Socket))
	case a.Port != 0 && used["{socket}"]:
		v.errorf(at+".command", "uses {socket}, but the app listens on a port")
	case a.Socket != "" && used["{port}"]:
		v.errorf(at+".command", "uses {port}, but the app listens on a socket")
	}
}

func (v *validator) auth(a *Auth, hasMail, hasPublicURL bool) {
	if len(a.Methods) == 0 {
		v.errorf("auth.methods", "empty; nobody could log in")
	}
	names, emails := map[string]bool{}, 0
	for i := range a.Methods {
		m := &a.Methods[i]
		at := fmt.Sprintf("auth.methods[%d]", i)
		switch m.Kind {
		case "local":
			if m.File == "" {
				v.errorf(at+".file", "empty; want the password file")
			}
			if t := m.MailTemplate; t != "" {
				if a, err := mail.ParseAddress(strings.ReplaceAll(t, "{user}", "user")); !strings.Contains(t, "{user}") || err != nil || a.Name != "" || a.Address != strings.ReplaceAll(t, "{user}", "user") {
					v.errorf(at+".mail_template", "%q; want an address with {user} in it, such as \"{user}@example.org\"", t)
				}
			}
		case "ldap":
			v.ldap(at, m)
		case "header":
			v.header(at, m)
		case "oidc":
			v.oidc(at, m, names)
		case "imap", "smtp":
			v.mail(at, m)
		case "email":
			if emails++; emails > 1 {
				v.errorf(at+".kind", "a second email method; the gateway uses one: list every domain in the first one's domains")
			}
			if len(m.Domains) == 0 {
				v.errorf(at+".domains", "empty; want the domains whose addresses may log in, such as [example.org]")
			}
			v.nonEmpty(at+".domains", m.Domains)
			if m.LinkTTL <= 0 {
				v.errorf(at+".link_ttl", "%s; want more than 0", show(m.LinkTTL))
			}
			v.atLeast(at+".per_address", m.PerAddress, 1)
			v.atLeast(at+".per_client", m.PerClient, 1)
			if m.Window <= 0 {
				v.errorf(at+".window", "%s; want more than 0", show(m.Window))
			}
			if !hasMail {
				v.errorf(at, "kind email needs the mail block: the relay the links are sent through")
			}
			if !hasPublicURL {
				v.errorf(at, "kind email needs public_url: the links name it (never a request's Host, which the asker chooses)")
			}
		case "":
			v.errorf(at+".kind", "required: want %s", orList(methodKinds))
			continue
		default:
			v.errorf(at+".kind", "%q; want %s", m.Kind, orList(methodKinds))
			continue
		}
		v.nonEmpty(at+".admin_users", m.AdminUsers)
	}
	r := a.RateLimit
	v.atLeast("auth.rate_limit.per_user", r.PerUser, 0)
	v.atLeast("auth.rate_limit.per_address", r.PerAddress, 0)
	if (r.PerUser > 0 || r.PerAddress > 0) && r.Window <= 0 {
		v.errorf("auth.rate_limit.window", "%s; want more than 0", show(r.Window))
	}
	v.nonEmpty("auth.totp.required_groups", a.TOTP.RequiredGroups)
	if a.TOTP.Issuer == "" || strings.Contains(a.TOTP.Issuer, ":") {
		v.errorf("auth.totp.issuer", "%q; want a name without a colon (the app shows ISSUER:USER)", a.TOTP.Issuer)
	}
	v.atLeast("auth.totp.max_failures", a.TOTP.MaxFailures, 1)
	if a.TOTP.Window <= 0 {
		v.errorf("auth.totp.window", "%s; want more than 0", show(a.TOTP.Window))
	}
	if a.TOTP.PendingTTL < 30*time.Second || a.TOTP.PendingTTL > time.Hour {
		v.errorf("auth.totp.pending_ttl", "%s; want 30s to 1h (the time to type a code, not a login)", show(a.TOTP.PendingTTL))
	}
	if a.SessionTTL <= 0 {
		v.errorf("auth.session_ttl", "%s; want more than 0", show(a.SessionTTL))
	}
	if a.OnUserRemoved != "stop" && a.OnUserRemoved != "keep" {
		v.errorf("auth.on_user_removed", "%q; want stop or keep", a.OnUserRemoved)
	}
}

func (v *validator) ldap(at string, m *AuthMethod) {
	switch u, err := url.Parse(m.URL); {
	case m.URL == "":
		v.errorf(at+".url", "required: the directory server, such as ldaps://ldap.example.org")
	case err != nil || u.Scheme != "ldap" && u.Scheme != "ldaps" || u.Host == "" || u.User != nil ||
		u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "":
		v.errorf(at+".url", "%q; want ldaps://host[:port] or ldap://host[:port]", m.URL)
	case u.Scheme == "ldaps" && m.StartTLS:
		v.errorf(at+".start_tls", "ldaps:// is TLS already; remove start_tls")
	case u.Scheme == "ldap" && !m.StartTLS && !loopback(u.Hostname()):
		v.errorf(at+".url", "ldap:// without start_tls would send passwords in clear; use ldaps:// or set start_tls: true")
	}
	switch {
	case m.BindDNTemplate != "" && m.Search != nil:
		v.errorf(at+".search", "set bind_dn_template or search, not both")
	case m.BindDNTemplate == "" && m.Search == nil:
		v.errorf(at, "set bind_dn_template or search: how to find a user's DN")
	case m.Search == nil:
		if !strings.Contains(m.BindDNTemplate, "{user}") {
			v.errorf(at+".bind_dn_template", "%q has no {user}", m.BindDNTemplate)
		}
	default:
		s := m.Search
		if s.BaseDN == "" {
			v.errorf(at+".search.base_dn", "required: where the search starts, such as ou=people,dc=example,dc=org")
		}
		if !strings.HasPrefix(s.Filter, "(") || !strings.HasSuffix(s.Filter, ")") || !strings.Contains(s.Filter, "{user}") {
			v.errorf(at+".search.filter", "%q; want an LDAP filter in parentheses with {user}, such as (uid={user})", s.Filter)
		}
		switch {
		case s.BindDN != "" && s.BindPasswordFile == "":
			v.errorf(at+".search.bind_password_file", "required with bind_dn")
		case s.BindDN == "" && s.BindPasswordFile != "":
			v.errorf(at+".search.bind_dn", "required with bind_password_file")
		}
	}
	if m.Timeout <= 0 {
		v.errorf(at+".timeout", "%s; want more than 0", show(m.Timeout))
	}
}

func (v *validator) relay(m *MailRelay) {
	switch u, err := url.Parse(m.Relay); {
	case m.Relay == "":
		v.errorf("mail.relay", "required: the SMTP relay, such as smtp://mail.example.org")
	case !serverURL(u, err, "smtp", "smtps"):
		v.errorf("mail.relay", "%q; want smtp://host[:port] (STARTTLS) or smtps://host[:port]", m.Relay)
	}
	if _, ok := TLSVersions[m.MinTLS]; !ok {
		v.errorf("mail.min_tls", "%q; want 1.2 or 1.3 (1.0 or 1.1 only for a relay that cannot do better)", m.MinTLS)
	}
	if a, err := mail.ParseAddress(m.From); m.From == "" || err != nil || !strings.Contains(a.Address, "@") {
		v.errorf("mail.from", "%q; want an address such as \"airlock <airlock@example.org>\"", m.From)
	}
	if (m.User == "") != (m.PasswordFile == "") {
		v.errorf("mail.password_file", "set user and password_file together")
	}
	if m.Timeout <= 0 {
		v.errorf("mail.timeout", "%s; want more than 0", show(m.Timeout))
	}
}

// serverURL reports whether u (parsed with err) is a server's address:
// one of schemes and a host (and port), nothing else.
func serverURL(u *url.URL, err error, schemes ...string) bool {
	return err == nil && slices.Contains(schemes, u.Scheme) && u.Host != "" && u.User == nil &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == ""
}

// TLSVersions are min_tls's values.
var TLSVersions = map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

func (v *validator) mail(at string, m *AuthMethod) {
	secure, plain := m.Kind+"s", m.Kind
	switch u, err := url.Parse(m.URL); {
	case m.URL == "":
		v.errorf(at+".url", "required: the mail server, such as %s://mail.example.org", secure)
	case !serverURL(u, err, secure, plain):
		v.errorf(at+".url", "%q; want %s://host[:port] (implicit TLS) or %s://host[:port] (STARTTLS)", m.URL, secure, plain)
	}
	if _, ok := TLSVersions[m.MinTLS]; !ok {
		v.errorf(at+".min_tls", "%q; want 1.2 or 1.3 (1.0 or 1.1 only for a server that cannot do better)", m.MinTLS)
	}
	if !strings.Contains(m.Login, "{user}") {
		v.errorf(at+".login", "%q has no {user}", m.Login)
	}
	if m.Timeout <= 0 {
		v.errorf(at+".timeout", "%s; want more than 0", show(m.Timeout))
	}
}

// oidcName is an OpenID provider's name: it becomes a URL path segment.
var oidcName = regexp.MustCompile("^[a-z0-9][a-z0-9-]{0,31}$")

func (v *validator) oidc(at string, m *AuthMethod, names map[string]bool) {
	switch {
	case !oidcName.MatchString(m.Name):
		v.errorf(at+".name", "%q; want 1 to 32 of a-z, 0-9 and '-' (it is part of the redirect URI)", m.Name)
	case names[m.Name]:
		v.errorf(at+".name", "%q names two providers", m.Name)
	}
	names[m.Name] = true
	switch u, err := url.Parse(m.Issuer); {
	case m.Issuer == "":
		v.errorf(at+".issuer", "required: the provider's issuer URL, such as https://idp.example.org/realms/hpc")
	case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && u.Scheme != "http"):
		v.errorf(at+".issuer", "%q; want https://host[/path]", m.Issuer)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		v.errorf(at+".issuer", "http:// would let anyone on the path forge logins; use https:// (http:// only to a loopback address)")
	}
	if m.ClientID == "" {
		v.errorf(at+".client_id", "required: airlock's client id at the provider")
	}
	if m.UserClaim == "" {
		v.errorf(at+".user_claim", "empty; want the claim holding the user name, such as preferred_username")
	}
	if m.GroupsClaim == "" {
		v.errorf(at+".groups_claim", "empty; want the claim holding the groups, such as groups")
	}
	if strings.ContainsAny(m.UserDomain, "@ /") && !strings.HasPrefix(m.UserDomain, "@") || strings.Count(m.UserDomain, "@") > 1 {
		v.errorf(at+".user_domain", "%q; want a domain such as example.org", m.UserDomain)
	}
	v.nonEmpty(at+".admin_groups", m.AdminGroups)
	v.nonEmpty(at+".scopes", m.Scopes)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// headerName is an HTTP field name (RFC 9110 §5.1: a token).
var headerName = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

func (v *validator) header(at string, m *AuthMethod) {
	if !headerName.MatchString(m.Header) {
		v.errorf(at+".header", "%q is not a header name", m.Header)
	}
	if len(m.TrustedProxies) == 0 {
		v.errorf(at+".trusted_proxies", "required: the reverse proxies' addresses; without them anyone could send the header")
	}
	for i, s := range m.TrustedProxies {
		key := fmt.Sprintf("%s.trusted_proxies[%d]", at, i)
		if err := checkProxy(s); err != nil {
			v.errorf(key, "%v", err)
		}
	}
}

// checkProxy checks one trusted proxy: an IP address or a CIDR prefix,
// with no host bits set, narrower than every address.
func checkProxy(s string) error {
	if !strings.Contains(s, "/") {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		return nil
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	case p.Bits() == 0:
		return fmt.Errorf("%s matches every address, so anyone could log in as anyone; name the proxies", s)
	case p.Addr().Is4In6() && p.Bits() <= 96:
		return fmt.Errorf("%s matches every IPv4 address, so anyone could log in as anyone; name the proxies", s)
	case p.Masked() != p:
		return fmt.Errorf("%s has bits set past /%d; did you mean %s?", s, p.Bits(), p.Masked())
	}
	return nil
}

// TrustedPrefixes returns a header method's trusted_proxies as prefixes
// (an address is a prefix of its full length). Entries that do not parse,
// which a checked Config has none of, are left out.
func (m AuthMethod) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range m.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// isPort reports whether s is a decimal port number, 1 to 65535 (or 0 if
// zeroOK).
func isPort(s string, zeroOK bool) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535 && (n > 0 || zeroOK && n == 0) && s == strconv.Itoa(n)
}

// The image formats, guest families and firmware QEMU sessions support
// (the vm package's lists; config does not import the seal side).
var (
	imageFormats = []string{"qcow2", "raw", "vmdk", "vdi", "iso"}
	imageOSes    = []string{"windows", "linux", "other"}
	firmwares    = []string{"bios", "uefi"}
	mountTag     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,31}$`)
	pciAddress   = regexp.MustCompile(`^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
)

// hiddenInSeal are directories the seal replaces with its own, so a file
// under them is not what QEMU would see.
var hiddenInSeal = []string{"/tmp", "/run", "/var/tmp", "/dev/shm"}

// nodePath checks an absolute path QEMU opens inside the seal.
func (v *validator) nodePath(key, p string) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		v.errorf(key, "%q is not a clean absolute path", p)
		return
	}
	for _, h := range hiddenInSeal {
		if p == h || strings.HasPrefix(p, h+"/") {
			v.errorf(key, "%q is under %s, which sessions have their own of: QEMU would not find it", p, h)
			return
		}
	}
}

// uniqueName checks the name of list item at (a profile, an image): 1 to 32
// of a-z, 0-9 and -, not used by an earlier item. first maps each name to
// the key that first used it.
func (v *validator) uniqueName(at, what, name string, first map[string]string) {
	switch {
	case name == "":
		v.errorf(at+".name", "required: 1 to 32 of a-z, 0-9 and -")
	case !profileName.MatchString(name):
		v.errorf(at+".name", "%q is not 1 to 32 of a-z, 0-9 and -", name)
	case first[name] != "":
		v.errorf(at+".name", "duplicate %s name %q (first at line %d)", what, name, v.line(first[name]))
	default:
		first[name] = at + ".name"
	}
}

func (v *validator) images(images []Image) {
	first := map[string]string{}
	for i := range images {
		im := &images[i]
		at := fmt.Sprintf("images[%d]", i)
		v.uniqueName(at, "image", im.Name, first)
		if im.Path == "" {
			v.errorf(at+".path", "required: the master image's absolute path on the nodes")
		} else {
			v.nodePath(at+".path", im.Path)
		}
		if !slices.Contains(imageFormats, im.Format) {
			v.errorf(at+".format", "%q; want %s", im.Format, orList(imageFormats))
		}
		if !slices.Contains(imageOSes, im.OS) {
			v.errorf(at+".os", "%q; want %s", im.OS, orList(imageOSes))
		}
		if !slices.Contains(firmwares, im.Firmware) {
			v.errorf(at+".firmware", "%q; want %s", im.Firmware, orList(firmwares))
		}
		switch {
		case im.RDPPassword != "" && im.RDPPassword != "generate":
			v.errorf(at+".rdp_password", "%q; want generate, or \"\" for none", im.RDPPassword)
		case im.RDPPassword != "" && !im.RDP:
			v.errorf(at+".rdp_password", "only with rdp: true (the password is for the guest's RDP server)")
		}
		if im.CPUs.Default < 1 {
			v.errorf(at+".cpus.default", "%d; want at least 1", im.CPUs.Default)
		}
		v.atLeast(at+".cpus.max", im.CPUs.Max, 0)
		checkRange(v, at+".cpus.default", at+".cpus.max", im.CPUs.Default, im.CPUs.Max, false)
		if im.Memory.Default < 64*MiB {
			v.errorf(at+".memory.default", "%s; want at least 64M", im.Memory.Default)
		}
		v.atLeast(at+".memory.max", im.Memory.Max, 0)
		checkRange(v, at+".memory.default", at+".memory.max", im.Memory.Default, im.Memory.Max, false)
		if im.Kernel != "" {
			v.nodePath(at+".kernel", im.Kernel)
		} else {
			if im.Initrd != "" {
				v.errorf(at+".initrd", "only with kernel")
			}
			if im.Append != "" {
				v.errorf(at+".append", "only with kernel")
			}
		}
		if im.Initrd != "" && im.Kernel != "" {
			v.nodePath(at+".initrd", im.Initrd)
		}
		if sp := im.Share.Path; sp != "" && sp != "~" {
			if rest, ok := strings.CutPrefix(sp, "~/"); ok {
				if rest == "" || filepath.Clean(rest) != rest || strings.HasPrefix(rest, "..") {
					v.errorf(at+".share.path", "%q: want ~/DIR, a folder in the owner's home", sp)
				}
			} else {
				v.nodePath(at+".share.path", sp)
			}
		}
		if im.OS == "windows" {
			if im.Share.ReadOnly && im.Share.Path != "" {
				v.errorf(at+".share.read_only", "QEMU's SMB share, which windows guests get, cannot be read-only")
			}
			if len(im.Volumes) > 0 {
				v.errorf(at+".volumes", "windows guests get only the share (over SMB); volumes need 9p")
			}
		}
		tags := map[string]bool{"home": true}
		for j, vol := range im.Volumes {
			vat := fmt.Sprintf("%s.volumes[%d]", at, j)
			if vol.Path == "" {
				v.errorf(vat+".path", "required: an absolute path on the nodes")
			} else {
				v.nodePath(vat+".path", vol.Path)
			}
			switch {
			case !mountTag.MatchString(vol.Tag):
				v.errorf(vat+".tag", "%q; want 1 to 31 of A-Z, a-z, 0-9, _ and -", vol.Tag)
			case tags[vol.Tag]:
				v.errorf(vat+".tag", "%q is taken (home is the share's)", vol.Tag)
			}
			tags[vol.Tag] = true
		}
		if im.PersistentAllowed && im.Format == "iso" {
			v.errorf(at+".persistent_allowed", "an iso image has no disk to keep")
		}
		for j, g := range im.GPU {
			if !pciAddress.MatchString(g) {
				v.errorf(fmt.Sprintf("%s.gpu[%d]", at, j), "%q is not a PCI address such as 0000:01:00.0", g)
			}
		}
	}
}

// vmProfile checks a vm profile: it names an image, and leaves cpus and
// memory to it.
func (v *validator) vmProfile(at string, p *Profile, images []Image) {
	if p.VM == nil || p.VM.Image == "" {
		v.errorf(at+".vm.image", "required: the name of one of images")
		return
	}
	names := make([]string, 0, len(images))
	for _, im := range images {
		if im.Name == p.VM.Image {
			// Compared with the defaults, not with what the file set, so
			// that the effective config (which writes every key) reads back.
			d := defaultProfile("vm")
			if p.CPUs != d.CPUs {
				v.errorf(at+".cpus", "a vm profile takes its cpus from its image (images[].cpus); remove it here")
			}
			if p.Memory != d.Memory {
				v.errorf(at+".memory", "a vm profile takes its memory from its image (images[].memory); remove it here")
			}
			return
		}
		if im.Name != "" && !slices.Contains(names, im.Name) {
			names = append(names, im.Name)
		}
	}
	if len(names) == 0 {
		v.errorf(at+".vm.image", "no image named %q: images is empty", p.VM.Image)
		return
	}
	v.errorf(at+".vm.image", "no image named %q; want %s", p.VM.Image, orList(names))
}

// dnsName is a DNS name of lower-case labels, at least two of them.
var dnsName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (v *validator) apps(c *Config) {
	d := c.Apps.Domain
	if d != "" && (!dnsName.MatchString(d) || len(d) > 200) {
		v.errorf("apps.domain", "%q is not a DNS name like apps.example.org (lower case, no port, no wildcard)", d)
		return
	}
	hasApp := slices.ContainsFunc(c.Profiles, func(p Profile) bool { return p.Kind == "app" })
	if d == "" && hasApp && !c.Apps.SameOrigin && !loopbackListen(c.Listen) {
		v.errorf("apps.domain", "required: listen %q is not a loopback address, so browsers elsewhere cannot reach apps.localhost; set a wildcard DNS name (or, knowing the risk, apps.same_origin)", c.Listen)
	}
	if d != "" && c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err == nil {
			h := strings.ToLower(u.Hostname())
			if h == d || strings.HasSuffix(h, "."+d) {
				v.errorf("apps.domain", "%q holds the gateway's own host %q: the gateway would take itself for an app host, and apps could set cookies the gateway receives; use a name of its own such as apps.%s", d, h, h)
			}
		}
	}
}

// loopbackListen reports whether the gateway listens on loopback only.
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// clipboard checks a profile's clipboard policy: one of the contract's,
// and only where something enforces it: the console's vnc connector and
// the browser's RDP relay (any policy: it takes the clipboard channel out
// or filters it one way). Native RDP clients keep TLS end to end to the
// desktop, so nothing can hold them to less than both.
func (v *validator) clipboard(at string, p *Profile, images []Image, rdpListen string) {
	key := at + ".clipboard"
	c, err := contract.ParseClipboard(p.Clipboard)
	if err != nil {
		v.errorf(key, "%q; want both, in, out or none", p.Clipboard)
		return
	}
	if p.Record && p.Kind == "app" {
		v.errorf(at+".record", "only desktop and vm profiles can be recorded")
	}
	if c == contract.ClipboardBoth {
		return
	}
	rdp := ""
	switch p.Kind {
	case "app":
		v.errorf(key, "%s: only desktop and vm profiles have a clipboard to control (a web app's is the browser's own)", c)
		return
	case "desktop":
		if p.Desktop != nil && p.Desktop.RDP {
			rdp = "desktop.rdp"
		}
	case "vm":
		for _, im := range images {
			if p.VM != nil && im.Name == p.VM.Image && im.RDP {
				rdp = "image " + im.Name + ", which serves RDP"
			}
		}
	}
	if rdp != "" && rdpListen != "" {
		v.errorf(key, "%s with %s and rdp.listen: native RDP clients keep TLS end to end to the desktop, so nothing can hold their clipboard to %s; unset rdp.listen, or serve this profile in the browser only", c, rdp, c)
	}
}
