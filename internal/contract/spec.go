package contract

import (
	"encoding/json"
	"reflect"
	"strconv"
	"time"
)

// Spec is what `airlock run` is asked to start. The gateway builds it, a
// backend carries its JSON form to the node, and the runner parses and
// validates it (runner.ParseSpec); see the README.
type Spec struct {
	// ID names the session: 1-64 of [A-Za-z0-9._-], starting with a letter or digit.
	ID string `json:"id"`
	// Owner is the account the session runs as. Empty: the user running
	// airlock. Only root may name another account.
	Owner string `json:"owner"`
	// Workload is the session's main process; when it exits the session ends.
	Workload Command `json:"workload"`
	// Processes are started beside the workload (an xterm in a desktop);
	// their exit is only logged.
	Processes []Command `json:"processes"`
	// Connectors are the only ways in.
	Connectors []ConnectorSpec `json:"connectors"`
	// Egress lists host:port targets reachable from inside the seal as
	// 127.0.0.1:PORT; nothing else gets out.
	Egress []string `json:"egress"`
	// UnixSockets are host pathname UNIX sockets (absolute paths, e.g. a
	// licence daemon's; stream or seqpacket) the workload may connect to.
	// Every other host pathname socket (an ssh ControlMaster or gpg-agent
	// in the owner's home, any daemon's socket the seal can see) is refused
	// with EACCES; sockets in the seal's own /tmp, /run, /var/tmp and
	// /dev/shm are always reachable.
	UnixSockets []string `json:"unix_sockets"`
	// Lifetime ends the session after this long (Go duration, e.g. "8h").
	// Empty: no limit.
	Lifetime Duration `json:"lifetime"`
	// ReadyTimeout bounds the wait for connector targets to accept
	// connections before the session counts as ready. Default 60s.
	ReadyTimeout Duration `json:"ready_timeout"`
	// Grace is the time between SIGTERM and SIGKILL at the end. Default 10s.
	Grace Duration `json:"grace"`
	// TicketKeyFile holds the 32-byte key that verifies tickets (raw or hex).
	// Required when there is a vnc or http connector.
	TicketKeyFile string `json:"ticket_key_file"`
	// TicketKeyEnv names an environment variable of the runner holding the
	// key in hex instead, for runners started by a batch job (the key never
	// touches the node's disk). The runner unsets it. One of the two is
	// required when there is a vnc or http connector.
	TicketKeyEnv string `json:"ticket_key_env"`
	// TLS is the session's certificate. Without it, a self-signed one is
	// made for the session and its SHA-256 is reported in the ready event.
	TLS *TLSFiles `json:"tls"`
	// ScratchDir is where the session's private /tmp lives on the host.
	// Default: /run/airlock/ID for a root runner; otherwise
	// $XDG_RUNTIME_DIR/airlock/ID when that directory is ours and private,
	// else a new directory with a random name in $TMPDIR. Never a fixed
	// name in a directory other users can write.
	ScratchDir string `json:"scratch_dir"`
	// Hide lists host paths (files or directories) the workload must not
	// see: inside the seal each directory is empty and each file is empty,
	// both read-only, and the workload cannot undo it. The gateway lists
	// its state directory and every file holding one of its secrets; the
	// runner adds the files it reads secrets from (ticket_key_file,
	// tls.key_file, vnc_password_file). Clean absolute paths, not /, at most 64;
	// a path that does not exist is skipped.
	Hide []string `json:"hide"`
	// VM makes the session a QEMU virtual machine that the runner
	// prepares itself: it checks the image, makes the session's overlay in
	// the scratch directory and starts QEMU as the workload, whose argv
	// must then be empty. See VMSpec.
	VM *VMSpec `json:"vm"`
	// Kiosk makes a desktop session one locked browser window (see
	// KioskSpec). The workload is still the X server; the browser is
	// started once it answers, and its exit ends the session.
	Kiosk *KioskSpec `json:"kiosk"`
	// RDPLogon gives an RDP server in the seal that does NLA (FreeRDP's
	// shadow server) the session's one-time password. See RDPLogon.
	RDPLogon *RDPLogon `json:"rdp_logon"`
	// Isolation is what the runner may fall back to when it cannot make
	// the seal's namespaces. Empty (the default, and the only value the
	// local and Slurm backends ever write): none, a seal that cannot be
	// made is a failure. IsolationPod is set by the Kubernetes backend
	// alone, never from a profile (see IsolationPod).
	Isolation Isolation `json:"isolation,omitempty"`
}

// RDPLogon is the one account an NLA RDP server in the seal accepts. The
// runner reads the password (from PasswordFile, 0600, or PasswordEnv,
// unset once read, as with vm.rdp_password_*) and writes only its NT hash,
// as an NTLM SAM file (USER::LMHASH:NTHASH:::) readable by the owner
// alone, to SAMFile in the seal's private /tmp: the password itself never
// reaches the seal, a command line or a log.
type RDPLogon struct {
	// User is the account's name: 1-64 of A-Z a-z 0-9 . _ -.
	User string `json:"user"`
	// PasswordFile or PasswordEnv (exactly one) hold the password: 8-64
	// of A-Z a-z 0-9.
	PasswordFile string `json:"password_file"`
	PasswordEnv  string `json:"password_env"`
	// SAMFile is the file the server reads: directly in /tmp.
	SAMFile string `json:"sam_file"`
}

// Isolation names what a session may rely on instead of the seal.
type Isolation string

// IsolationPod: the runner is a pod's main process. Where the cluster
// forbids user namespaces (seccomp RuntimeDefault, user.max_user_namespaces
// = 0, kernel.unprivileged_userns_clone = 0), it starts the connectors and
// the workload without the seal's namespaces, still with no_new_privs, no
// capabilities, their own process groups, the workload's Landlock domain
// and unix guard, and says so; the pod's network namespace and its
// NetworkPolicy are then the isolation. A root runner refuses it: root
// needs no user namespace, so the fallback could only weaken its seal.
const IsolationPod Isolation = "pod"

// KioskBrowsers are the browsers a kiosk can run.
var KioskBrowsers = []string{"chromium", "firefox"}

// KioskProxyPort is the port on the seal's 127.0.0.1 where a kiosk's
// browser finds the runner's egress proxy (its only way out).
const KioskProxyPort = 3128

// KioskSpec is a kiosk browser: one full-screen window on URL with no
// address bar, devtools, downloads, printing or extensions, confined by
// browser policy to URL's origin, and with no way out of the seal but an
// HTTP CONNECT proxy the runner runs outside it, which lets through only
// Allow (and URL's own host:port) and resolves names itself.
type KioskSpec struct {
	// URL is the one site shown: https://, with a host (the proxy
	// tunnels TLS only).
	URL string `json:"url"`
	// Browser is chromium (the default, also "") or firefox (Debian's
	// firefox-esr).
	Browser string `json:"browser"`
	// Allow are more HOST:PORT destinations the proxy lets through (an
	// identity provider the site redirects to, say); the browser policy
	// allows their https origins too. URL's is always allowed.
	Allow []string `json:"allow"`
	// CAPEM are CA certificates (PEM, public) the browser trusts besides
	// the system's, for a site with a private CA.
	CAPEM string `json:"ca_pem"`
	// Display is the X display the browser opens. Default ":1".
	Display string `json:"display"`
	// Geometry is the X screen's size, WIDTHxHEIGHT: the window is made
	// that size at 0,0 (with no window manager in the session, --kiosk
	// alone leaves a margin). Default "": Chromium's own choice.
	Geometry string `json:"geometry"`
}

// VMSpec is a virtual machine session. Inside the seal QEMU's VNC display
// is the UNIX socket vm.VNCSocket (the target for a vnc connector), its
// QMP monitor vm.QMPSocket and its serial log vm.SerialLog, all in the
// session's private /tmp; the guest's RDP port, when RDP is set, is
// 127.0.0.1:3389 in the seal.
type VMSpec struct {
	// Name is the image's name; a persistent overlay is called NAME.qcow2.
	// 1-64 of [A-Za-z0-9._-], starting with a letter or digit.
	Name string `json:"name"`
	// Image is the absolute path of the master image, only ever read.
	Image string `json:"image"`
	// Format is what Image must be: qcow2, raw, vmdk, vdi or iso.
	Format string `json:"format"`
	// OS is windows, linux or other.
	OS string `json:"os"`
	// Firmware is bios (default) or uefi (OVMF, which must be installed).
	Firmware string `json:"firmware"`
	// Kernel, Initrd and Append boot a Linux kernel directly.
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	Append string `json:"append"`
	// CPUs and MemoryMB size the guest. Defaults 1 and 1024.
	CPUs     int `json:"cpus"`
	MemoryMB int `json:"memory_mb"`
	// Accel is auto (default: kvm when /dev/kvm is usable by the owner,
	// else tcg), kvm (refuse to start without it) or tcg.
	Accel string `json:"accel"`
	// QEMU is the emulator. Default "qemu-system-x86_64" (looked up in PATH).
	QEMU string `json:"qemu"`
	// QEMUImg is qemu-img. Default "qemu-img" (looked up in PATH).
	QEMUImg string `json:"qemu_img"`
	// RDP forwards the guest's port 3389 to 127.0.0.1:3389 in the seal.
	RDP bool `json:"rdp"`
	// RDPPasswordFile (a file the runner reads, 0600, as with
	// ticket_key_file) or RDPPasswordEnv (an environment variable of the
	// runner, unset once read, for a batch job) hold the session's
	// one-time password for the guest's RDP account. The runner hands it
	// to the guest as the SMBIOS OEM string (type 11)
	// "airlock.rdp_password=PASSWORD", through a 0600 file in the seal's
	// private /tmp (QEMU's -smbios path=), never on QEMU's command line.
	// At most one; only with RDP. 8-64 of A-Z a-z 0-9.
	RDPPasswordFile string `json:"rdp_password_file"`
	RDPPasswordEnv  string `json:"rdp_password_env"`
	// RDPUser is the account the password is for, given to the guest as
	// the OEM string "airlock.rdp_user=NAME" (not a secret: on QEMU's
	// command line). 1-64 of A-Z a-z 0-9 . _ -; only with a password.
	RDPUser string `json:"rdp_user"`
	// Share is the owner's folder in the guest (SMB for windows, else 9p
	// with its tag). Default: none.
	Share *VMShare `json:"share"`
	// Volumes are more host folders (9p; not for windows).
	Volumes []VMShare `json:"volumes"`
	// PersistentDir keeps the overlay as PersistentDir/NAME.qcow2 between
	// sessions instead of in the scratch directory. Default "": throwaway.
	PersistentDir string `json:"persistent_dir"`
	// GPUs are PCI addresses of devices bound to vfio-pci to pass through.
	GPUs []string `json:"gpus"`
}

// VMShare is a host folder shown to the guest.
type VMShare struct {
	Path     string `json:"path"`
	Tag      string `json:"tag"`
	ReadOnly bool   `json:"read_only"`
}

// Command is a process to start inside the seal.
type Command struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
	Dir  string            `json:"dir"`
}

// ConnectorSpec is one way into the session.
type ConnectorSpec struct {
	// Name is what tickets and endpoints call it: 1-32 of [a-z0-9-].
	Name string `json:"name"`
	// Kind is one of the registered kinds (see Kinds): vnc, http, tls or rnode.
	Kind ConnectorKind `json:"kind"`
	// Target is where the connector forwards inside the seal: HOST:PORT on
	// loopback, or unix:/path.
	Target string `json:"target"`
	// Listen is tcp:HOST:PORT (bound in the host's network namespace; port 0
	// picks one) or unix:/absolute/path.
	Listen string `json:"listen"`
	// VNCPasswordFile (vnc only): the connector answers the VNC password
	// challenge itself with this password, so users never see it.
	VNCPasswordFile string `json:"vnc_password_file"`
	// SessionVNCPasswordFile (kinds with KindInfo.VNCPassword): the runner
	// makes a fresh random VNC password for this session, gives it to the
	// connector (which answers the VNC server's challenge with it, so
	// users never see it) and writes it, in the format of TigerVNC's
	// vncpasswd, to this path in the seal's private /tmp, readable only by
	// the owner, for the VNC server (Xvnc -PasswordFile). It never reaches
	// the gateway, a command line or a disk outside the session's scratch.
	// A clean path under /tmp; not with VNCPasswordFile.
	SessionVNCPasswordFile string `json:"session_vnc_password_file"`
	// Wait: whether the session is ready only once Target accepts. Default:
	// the kind's KindInfo.Wait (true for vnc and http, false for tls: an
	// RDP port inside a VM comes up long after the VM starts).
	Wait *bool `json:"wait"`
	// Idle closes a connection after this long without traffic. Empty: never.
	Idle Duration `json:"idle"`
	// Clipboard (kinds with KindInfo.Clipboard) is which way clipboard
	// text may cross: both (default, also ""), in, out or none.
	Clipboard Clipboard `json:"clipboard"`
	// SecretEnv (kinds with KindInfo.Secret, required there) names an
	// environment variable of the runner holding the per-session secret,
	// at least 32 characters; the runner unsets it and hands it to the
	// connector on its secrets pipe only.
	SecretEnv string `json:"secret_env"`
	// CookiePath (kinds with KindInfo.Secret) is the path the browser sees
	// the connector under, such as /rnode/HOST/PORT/, to scope its cookie
	// to. Default "/".
	CookiePath string `json:"cookie_path"`
}

// TLSFiles names PEM files.
type TLSFiles struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// ClientCAFile is required for tls connectors (or ClientCAPEM):
	// clients must present a certificate signed by it.
	ClientCAFile string `json:"client_ca_file"`
	// ClientCAPEM is the client CA's certificate itself (public), for a
	// runner on another machine (a batch job), instead of ClientCAFile.
	ClientCAPEM string `json:"client_ca_pem"`
}

// Duration is a time.Duration written as a Go duration string.
type Duration time.Duration

// UnmarshalJSON accepts "90s", "8h", "" (zero).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Duration]()}
	}
	if str == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(str)
	if err != nil || v < 0 {
		return &json.UnmarshalTypeError{Value: strconv.Quote(str), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// String is the Go duration form, "8h0m0s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}
