package runner

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// The spec's types are the contract package's: the gateway builds them
// and this package parses and validates them.
type (
	Spec          = contract.Spec
	VMSpec        = contract.VMSpec
	VMShare       = contract.VMShare
	Command       = contract.Command
	ConnectorSpec = contract.ConnectorSpec
	TLSFiles      = contract.TLSFiles
	Duration      = contract.Duration
)

// maxSpec bounds a spec; real ones are a few KiB.
const maxSpec = 1 << 20

// maxHide bounds spec.Hide: each path is a mount in the seal.
const maxHide = 64

var (
	idRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	connNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// cookiePathRE: a Path attribute that cannot end the cookie line early
	// (no ";", space or control) and scopes to a directory.
	cookiePathRE = regexp.MustCompile(`^/([A-Za-z0-9._-]+/)*$`)
	errSpecSize  = fmt.Errorf("spec is larger than %d bytes", maxSpec)
)

// ParseSpec decodes and validates a spec. Unknown fields are errors, and
// every error names the line and column or the field at fault.
func ParseSpec(r io.Reader) (*Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSpec+1))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	if len(data) > maxSpec {
		return nil, errSpecSize
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("spec: %s", describeJSONError(data, dec, err))
	}
	if dec.More() {
		line, col := lineCol(data, int(dec.InputOffset()))
		return nil, fmt.Errorf("spec: line %d, column %d: unexpected data after the spec object", line, col)
	}
	if err := ValidateSpec(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

func describeJSONError(data []byte, dec *json.Decoder, err error) string {
	off := int(dec.InputOffset())
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = int(syn.Offset) - 1 // Offset is just past the bad byte
	case errors.As(err, &typ):
		field := typ.Field
		if i := strings.LastIndexByte(field, '.'); i >= 0 {
			off = keyOffset(data, `"`+field[i+1:]+`"`, off)
		} else {
			off = keyOffset(data, `"`+field+`"`, off)
		}
		line, col := lineCol(data, off)
		want := typ.Type.String()
		if typ.Type == reflect.TypeFor[Duration]() {
			want = `a duration like "8h"`
		}
		return fmt.Sprintf("line %d, column %d: %s: want %s, got %s", line, col, field, want, typ.Value)
	case errors.Is(err, io.EOF):
		return "empty spec"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The decoder gives no offset for an unknown field; find the key.
		off = keyOffset(data, strings.TrimPrefix(err.Error(), "json: unknown field "), off)
	}
	line, col := lineCol(data, off)
	return fmt.Sprintf("line %d, column %d: %s", line, col, strings.TrimPrefix(err.Error(), "json: "))
}

// keyOffset finds where quoted key is used as an object key, or returns def.
func keyOffset(data []byte, quoted string, def int) int {
	if loc := regexp.MustCompile(regexp.QuoteMeta(quoted) + `\s*:`).FindIndex(data); loc != nil {
		return loc[0]
	}
	return def
}

func lineCol(data []byte, off int) (int, int) {
	off = max(0, min(off, len(data)))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// ValidateSpec checks the spec's values; errors name the field.
func ValidateSpec(s *Spec) error {
	if !idRE.MatchString(s.ID) {
		return fmt.Errorf("spec: id %q: want 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", s.ID)
	}
	if s.VM != nil {
		if len(s.Workload.Argv) > 0 {
			return errors.New("spec: workload: must be empty with vm (the runner starts QEMU)")
		}
		if err := validateVM(s.VM); err != nil {
			return err
		}
	} else if err := validateCommand(s.Workload, "workload"); err != nil {
		return err
	}
	for i, p := range s.Processes {
		if err := validateCommand(p, fmt.Sprintf("processes[%d]", i)); err != nil {
			return err
		}
	}
	names := map[string]bool{}
	needKey := false
	for i, c := range s.Connectors {
		at := fmt.Sprintf("spec: connectors[%d]", i)
		if !connNameRE.MatchString(c.Name) {
			return fmt.Errorf("%s.name %q: want 1-32 of a-z 0-9 - starting with a letter or digit", at, c.Name)
		}
		if names[c.Name] {
			return fmt.Errorf("%s.name %q: used twice", at, c.Name)
		}
		names[c.Name] = true
		kind, ok := contract.Lookup(c.Kind)
		if !ok {
			return fmt.Errorf("%s.kind %q: want %s", at, c.Kind, contract.KindList())
		}
		needKey = needKey || kind.Tickets
		if kind.ClientCerts && (s.TLS == nil || (s.TLS.ClientCAFile == "") == (s.TLS.ClientCAPEM == "") ||
			(s.TLS.CertFile == "" && !strings.HasPrefix(c.Listen, "tcp:"))) {
			// On a TCP listener a missing certificate is made for the
			// session (and pinned by the gateway); a UNIX-socket one needs
			// the spec's.
			return fmt.Errorf("%s (%s): kind %s needs tls.client_ca_file or tls.client_ca_pem (one), and tls.cert_file and tls.key_file unless it listens on TCP", at, c.Name, c.Kind)
		}
		if err := validTarget(c.Target); err != nil {
			return fmt.Errorf("%s.target: %w", at, err)
		}
		if err := validListen(c.Listen); err != nil {
			return fmt.Errorf("%s.listen: %w", at, err)
		}
		if c.VNCPasswordFile != "" && !kind.VNCPassword {
			return fmt.Errorf("%s.vnc_password_file: not for kind %s", at, c.Kind)
		}
		if c.Clipboard != "" {
			if _, err := contract.ParseClipboard(string(c.Clipboard)); err != nil {
				return fmt.Errorf("%s.clipboard: %w", at, err)
			}
			if !kind.Clipboard {
				return fmt.Errorf("%s.clipboard: not for kind %s", at, c.Kind)
			}
		}
		switch {
		case kind.Secret && c.SecretEnv == "":
			return fmt.Errorf("%s.secret_env: required for kind %s (the environment variable holding the session's secret)", at, c.Kind)
		case !kind.Secret && c.SecretEnv != "":
			return fmt.Errorf("%s.secret_env: not for kind %s", at, c.Kind)
		case !kind.Secret && c.CookiePath != "":
			return fmt.Errorf("%s.cookie_path: not for kind %s", at, c.Kind)
		case c.SecretEnv != "" && !envNameRE.MatchString(c.SecretEnv):
			return fmt.Errorf("%s.secret_env %q: not an environment variable name", at, c.SecretEnv)
		case c.CookiePath != "" && !cookiePathRE.MatchString(c.CookiePath):
			return fmt.Errorf("%s.cookie_path %q: want an absolute URL path of A-Z a-z 0-9 / . _ - ending in /", at, c.CookiePath)
		}
		if c.SessionVNCPasswordFile != "" {
			switch {
			case !kind.VNCPassword:
				return fmt.Errorf("%s.session_vnc_password_file: not for kind %s", at, c.Kind)
			case c.VNCPasswordFile != "":
				return fmt.Errorf("%s.session_vnc_password_file: not with vnc_password_file (one password or the other)", at)
			}
			if err := validSessionVNCPasswordFile(c.SessionVNCPasswordFile); err != nil {
				return fmt.Errorf("%s.session_vnc_password_file: %w", at, err)
			}
		}
	}
	if needKey && s.TicketKeyFile == "" && s.TicketKeyEnv == "" {
		return errors.New("spec: ticket_key_file: required with a connector that checks tickets, such as vnc or http (or ticket_key_env)")
	}
	if s.TicketKeyFile != "" && s.TicketKeyEnv != "" {
		return errors.New("spec: ticket_key_file and ticket_key_env: give one")
	}
	if s.TicketKeyEnv != "" && !envNameRE.MatchString(s.TicketKeyEnv) {
		return fmt.Errorf("spec: ticket_key_env %q: not an environment variable name", s.TicketKeyEnv)
	}
	if s.TLS != nil && (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		return errors.New("spec: tls: cert_file and key_file go together")
	}
	ports := map[int]bool{}
	for i, e := range s.Egress {
		_, port, err := splitHostPort(e)
		if err != nil {
			return fmt.Errorf("spec: egress[%d] %q: %w", i, e, err)
		}
		if ports[port] {
			return fmt.Errorf("spec: egress[%d] %q: port %d used twice (each exception is 127.0.0.1:PORT inside)", i, e, port)
		}
		ports[port] = true
	}
	switch s.Isolation {
	case "", contract.IsolationPod:
	default:
		return fmt.Errorf("spec: isolation %q: want %q or none", s.Isolation, contract.IsolationPod)
	}
	if s.Kiosk != nil {
		if s.VM != nil {
			return errors.New("spec: kiosk: not with vm (a kiosk is a desktop's browser)")
		}
		if err := validateKiosk(s.Kiosk, ports); err != nil {
			return err
		}
	}
	if s.RDPLogon != nil {
		if err := validateRDPLogon(s.RDPLogon, s.VM != nil); err != nil {
			return err
		}
	}
	for i, p := range s.UnixSockets {
		if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p {
			return fmt.Errorf("spec: unix_sockets[%d] %q: want a clean absolute path", i, p)
		}
		for _, h := range hiddenInSeal {
			if p == h || strings.HasPrefix(p, h+"/") {
				return fmt.Errorf("spec: unix_sockets[%d] %q: %s inside the seal is the seal's own, not the host's, and its sockets are always reachable", i, p, h)
			}
		}
	}
	if len(s.Hide) > maxHide {
		return fmt.Errorf("spec: hide: %d paths, at most %d", len(s.Hide), maxHide)
	}
	for i, h := range s.Hide {
		if !strings.HasPrefix(h, "/") || filepath.Clean(h) != h || h == "/" || strings.ContainsRune(h, 0) {
			return fmt.Errorf("spec: hide[%d] %q: want a clean absolute path other than /", i, h)
		}
	}
	if s.ScratchDir != "" && !strings.HasPrefix(s.ScratchDir, "/") {
		return fmt.Errorf("spec: scratch_dir %q: must be absolute", s.ScratchDir)
	}
	return nil
}

// hiddenInSeal are host directories the seal replaces with its own: a
// path under them names something else inside.
var hiddenInSeal = []string{"/tmp", "/run", "/var/tmp", "/dev/shm"}

func checkSealPath(key, p string) error {
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p {
		return fmt.Errorf("spec: %s %q: want a clean absolute path", key, p)
	}
	for _, h := range hiddenInSeal {
		if p == h || strings.HasPrefix(p, h+"/") {
			return fmt.Errorf("spec: %s %q: %s is the seal's own inside, so QEMU would not see this path", key, p, h)
		}
	}
	return nil
}

func validateVM(v *VMSpec) error {
	if !idRE.MatchString(v.Name) {
		return fmt.Errorf("spec: vm.name %q: want 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", v.Name)
	}
	if err := checkSealPath("vm.image", v.Image); err != nil {
		return err
	}
	if !slices.Contains(vm.Formats, v.Format) {
		return fmt.Errorf("spec: vm.format %q: want %s", v.Format, strings.Join(vm.Formats, ", "))
	}
	switch v.Firmware {
	case "", "bios", "uefi":
	default:
		return fmt.Errorf("spec: vm.firmware %q: want bios or uefi", v.Firmware)
	}
	switch v.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("spec: vm.accel %q: want auto, kvm or tcg", v.Accel)
	}
	for key, p := range map[string]string{"vm.kernel": v.Kernel, "vm.initrd": v.Initrd, "vm.persistent_dir": v.PersistentDir} {
		if p != "" {
			if err := checkSealPath(key, p); err != nil {
				return err
			}
		}
	}
	if err := validateRDPPassword(v); err != nil {
		return err
	}
	if v.CPUs < 0 || v.MemoryMB < 0 {
		return errors.New("spec: vm.cpus and vm.memory_mb: must not be negative")
	}
	if v.PersistentDir != "" && v.Format == "iso" {
		return errors.New("spec: vm.persistent_dir: an ISO has no overlay to keep")
	}
	if v.Share != nil {
		if err := checkSealPath("vm.share.path", v.Share.Path); err != nil {
			return err
		}
	}
	for i, s := range v.Volumes {
		if err := checkSealPath(fmt.Sprintf("vm.volumes[%d].path", i), s.Path); err != nil {
			return err
		}
	}
	if strings.ContainsRune(v.Append, 0) || strings.ContainsRune(v.QEMU, 0) || strings.ContainsRune(v.QEMUImg, 0) {
		return errors.New("spec: vm: contains a NUL byte")
	}
	// The command line builder checks the rest (OS, tags, PCI addresses,
	// what windows guests can have) with placeholder paths.
	if _, err := vm.Args(machine(v, "kvm", "/tmp/disk.qcow2", vm.Firmware{})); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}

// machine is the VM as QEMU is to run it, with the overlay at disk.
func machine(v *VMSpec, accel, disk string, fw vm.Firmware) vm.Machine {
	m := vm.Machine{
		Name: "airlock-" + v.Name, Accel: accel, CPUs: cmp.Or(v.CPUs, 1), MemoryMB: cmp.Or(v.MemoryMB, 1024), OS: v.OS,
		Kernel: v.Kernel, Initrd: v.Initrd, Append: v.Append, Firmware: fw,
		VNC: "unix:" + vm.VNCSocket, Serial: vm.SerialLog, QMP: vm.QMPSocket, RDP: v.RDP, GPUs: v.GPUs,
	}
	if v.Format == "iso" {
		m.CDROM = v.Image
	} else {
		m.Disk = disk
	}
	if v.Share != nil {
		m.Share = &vm.Share{Path: v.Share.Path, Tag: cmp.Or(v.Share.Tag, "home"), ReadOnly: v.Share.ReadOnly}
	}
	for _, s := range v.Volumes {
		m.Volumes = append(m.Volumes, vm.Share{Path: s.Path, Tag: s.Tag, ReadOnly: s.ReadOnly})
	}
	if v.RDPUser != "" {
		m.OEMValues = append(m.OEMValues, vm.OEMRDPUser+v.RDPUser)
	}
	return m
}

func validateCommand(c Command, at string) error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return fmt.Errorf("spec: %s.argv: empty", at)
	}
	for k, v := range c.Env {
		if !envNameRE.MatchString(k) {
			return fmt.Errorf("spec: %s.env: bad variable name %q", at, k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("spec: %s.env.%s: contains a NUL byte", at, k)
		}
	}
	for i, a := range c.Argv {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("spec: %s.argv[%d]: contains a NUL byte", at, i)
		}
	}
	if c.Dir != "" && !strings.HasPrefix(c.Dir, "/") {
		return fmt.Errorf("spec: %s.dir %q: must be absolute", at, c.Dir)
	}
	return nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, errors.New("want HOST:PORT")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1-65535", p)
	}
	if host == "" {
		return "", 0, errors.New("empty host")
	}
	return host, port, nil
}

func validTarget(t string) error {
	if p, ok := strings.CutPrefix(t, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%q: unix socket path must be absolute", t)
		}
		return nil
	}
	if _, _, err := splitHostPort(t); err != nil {
		return fmt.Errorf("%q: %w (or unix:/path)", t, err)
	}
	return nil
}

func validListen(l string) error {
	switch {
	case strings.HasPrefix(l, "unix:/"):
		return nil
	case strings.HasPrefix(l, "tcp:"):
		host, p, err := net.SplitHostPort(strings.TrimPrefix(l, "tcp:"))
		if err != nil {
			return fmt.Errorf("%q: want tcp:HOST:PORT", l)
		}
		if port, err := strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
			return fmt.Errorf("%q: port %q: want 0-65535", l, p)
		}
		if host != "" && net.ParseIP(host) == nil {
			return fmt.Errorf("%q: host must be an IP address", l)
		}
		return nil
	}
	return fmt.Errorf("%q: want tcp:HOST:PORT or unix:/absolute/path", l)
}
