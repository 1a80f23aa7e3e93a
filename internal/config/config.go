// Package config is airlock.yaml: the schema of the gateway's one config
// file, its embedded defaults (which run a complete demo) and a strict
// loader whose every error names FILE:LINE and the key.
//
// The doc comments on the types below are the reference for the file; each
// says what a key means and what it is when the file does not set it.
// defaults.yaml, printed by `airlock config defaults`, is the same
// reference as a commented example, and a test keeps it equal to Default.
//
// How a file is read:
//   - Values in the file override the defaults key by key: a file that sets
//     only listen keeps every other default. A list (profiles,
//     auth.methods, programs, ...) replaces the default list as a whole, and
//     each item in it starts from the defaults of its kind.
//   - A key given no value (`listen:` or `listen: ~`) keeps its default.
//   - Unknown keys, duplicate keys, values of the wrong type, more than one
//     YAML document and merge keys (<<) are errors. Anchors and aliases are
//     allowed.
//   - Relative paths (tls, audit_log, auth files, backend.local.dir) are
//     relative to state_dir; see ResolvePaths.
//   - Secrets are never written inline: an LDAP service password comes from
//     bind_password_file, and a key such as bind_password is refused.
//
// Errors come as Errors, one Error per problem, each printed as
// "FILE:LINE: key.path: what is wrong".
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"
)

// Config is the whole of airlock.yaml.
type Config struct {
	// Listen is the gateway's HTTPS address, host:port. An empty host
	// listens on every address. Default "127.0.0.1:8443". The --listen
	// flag overrides it.
	Listen string `yaml:"listen"`
	// StateDir holds the gateway's database, keys, self-signed
	// certificate, audit log and per-session files. It must be an absolute
	// path. Default "": $XDG_STATE_HOME/airlock, or
	// ~/.local/state/airlock when XDG_STATE_HOME is unset (see
	// ResolvePaths). The --state-dir flag overrides it.
	StateDir string `yaml:"state_dir"`
	// PublicURL is the address users reach the gateway at, for links in
	// pages and share links (https://host[:port][/prefix]). Default "":
	// taken from each request's Host.
	PublicURL string `yaml:"public_url"`
	// RunAs is the account a portal user's sessions run as when the
	// gateway runs as root. Default "": the portal user's own, same-named
	// Unix account. A template with {user} ("airlock-{user}") names one
	// account per portal user. A fixed name is one account for everyone,
	// refused unless RunAsShared. Without root, sessions always run as the
	// gateway's own user.
	RunAs string `yaml:"run_as"`
	// RunAsShared accepts a fixed RunAs shared by every portal user, whose
	// sessions can then read and change each other's files. Default false.
	RunAsShared bool `yaml:"run_as_shared"`
	// TLS is the gateway's certificate. Default: self-signed.
	TLS TLS `yaml:"tls"`
	// Store is the gateway's database. Default {driver: sqlite}: one
	// file in state_dir, for one gateway.
	Store Store `yaml:"store"`
	// Backend is where sessions run. Default {kind: local}.
	Backend Backend `yaml:"backend"`
	// Profiles are what users may launch, in the order the portal lists
	// them. At least one is required; names are unique. Default: one
	// desktop profile named "desktop" (Xvnc with an xterm).
	Profiles []Profile `yaml:"profiles"`
	// Apps says where web apps (profiles of kind app) are served. Default:
	// each session on a host of its own under apps.localhost.
	Apps Apps `yaml:"apps"`
	// Forward is `airlock forward`: users publish a web app of a node
	// through a tunnel the node dials out. Defaults: see Forward.
	Forward Forward `yaml:"forward"`
	// Images are the virtual machine images vm profiles boot, each named
	// once. Default [].
	Images []Image `yaml:"images"`
	// Limits protect the machine and share it fairly. Defaults: see Limits.
	Limits Limits `yaml:"limits"`
	// Auth is how people log in. Default: the local password file.
	Auth Auth `yaml:"auth"`
	// AuditLog is the file that gets one JSON line per login, launch,
	// connect, share and stop. Default "audit.log" (in state_dir). Empty:
	// audit records go only to the main log.
	AuditLog string `yaml:"audit_log"`
	// Log is the gateway's own log, on standard error. Defaults: see Log.
	Log Log `yaml:"log"`
	// Metrics is the Prometheus endpoint. Default: off.
	Metrics Metrics `yaml:"metrics"`
	// Mail is the SMTP relay the gateway sends its e-mails through (login
	// links, "your session is ready"). Default: none, no e-mails.
	Mail *MailRelay `yaml:"mail"`
	// RDP is the TLS port for native RDP clients (`airlock rdp`).
	// Default: off.
	RDP RDP `yaml:"rdp"`
	// Recordings are where profiles with record: true keep their
	// sessions' recordings, and for how long. Defaults: see Recordings.
	Recordings Recordings `yaml:"recordings"`
}

// Store is the gateway's database: sessions, users, tokens, share links,
// the audit log and, with postgres, the keys every gateway shares.
type Store struct {
	// Driver is sqlite (the embedded default: state_dir/airlock.db, one
	// gateway) or postgres (a PostgreSQL database that several gateways
	// share; they then run background work once between them and share
	// the master key and CAs through it). Default "sqlite".
	Driver string `yaml:"driver"`
	// DSN names the PostgreSQL database, as a postgres:// URL or libpq
	// key=value words ("host=/run/postgresql dbname=airlock
	// user=airlock"); the PG* environment variables fill what it leaves
	// out. Required with postgres; no password in it: see PasswordFile.
	DSN string `yaml:"dsn"`
	// PasswordFile holds the database password (trailing newline
	// ignored). Default "": none (peer or certificate authentication, a
	// ~/.pgpass, or PGPASSWORD).
	PasswordFile string `yaml:"password_file"`
	// MasterKeyFile holds the master key every ticket, cookie and derived
	// secret comes from: 32 random bytes, raw or as 64 hexadecimal digits
	// (`openssl rand -hex 32`), mode 0600 or stricter. With it the key
	// never enters the database: a postgres store then holds only a check
	// value (a gateway with another key refuses to start) and the CAs and
	// certificate it shares sealed under the key, so a copy of the
	// database opens nothing. Every gateway of a site needs the same file.
	// Default "": state_dir/master.key, made at first start and, with
	// postgres, shared through the database.
	MasterKeyFile string `yaml:"master_key_file"`
	// PeerAddress is HOST:PORT where the other gateways sharing a postgres
	// store reach this one: a forward's tunnel held here is reached
	// through it. Default "": the listen address, with this host's name
	// for an unspecified one (0.0.0.0 or ::).
	PeerAddress string `yaml:"peer_address"`
}

// RDP is the gateway's TLS port for native RDP clients: it accepts only
// client certificates from the gateway's own CA (one per session and
// user, in the .airlock files the session page and the API hand out),
// checks each against revocation and the session on every connection,
// and passes it on to the session's tls connector.
type RDP struct {
	// Listen is the port's host:port (":8444" is the suggested one).
	// Default "": off, and desktop profiles' rdp and images' rdp serve
	// nothing.
	Listen string `yaml:"listen"`
	// Address is the host:port clients are told to dial in .airlock
	// files. Default "": the host the user reached the gateway at, with
	// listen's port.
	Address string `yaml:"address"`
	// MaxCertLifetime bounds a client certificate's life, which never
	// outlasts its session either. Default 12h.
	MaxCertLifetime time.Duration `yaml:"max_cert_lifetime"`
}

// MailRelay is the site's SMTP relay.
type MailRelay struct {
	// Relay is smtp://host[:587] (STARTTLS, always) or smtps://host[:465].
	// Required.
	Relay string `yaml:"relay"`
	// CAFile holds the CA certificates (PEM) the relay's certificate must
	// chain to. Default "": the system's.
	CAFile string `yaml:"ca_file"`
	// MinTLS is the oldest TLS version spoken to the relay. Default "1.2".
	MinTLS string `yaml:"min_tls"`
	// From is the sender, "airlock <airlock@example.org>". Required.
	From string `yaml:"from"`
	// User logs in to the relay (AUTH PLAIN) with the password in
	// PasswordFile. Default "": no login.
	User string `yaml:"user"`
	// PasswordFile holds the relay password (trailing newline ignored).
	// Required with user.
	PasswordFile string `yaml:"password_file"`
	// Timeout bounds sending one message. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

func (m *MailRelay) setDefaults() { m.MinTLS, m.Timeout = "1.2", 30*time.Second }

// TLS names the gateway's certificate files (PEM). Set both or neither.
type TLS struct {
	// CertFile is the certificate chain, leaf first. Default "": a
	// self-signed certificate is made on first start and kept in
	// state_dir.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the certificate's private key. Default "": see cert_file.
	KeyFile string `yaml:"key_file"`
}

// Backend says where runners are started. Only the block named by kind may
// be given.
type Backend struct {
	// Kind is "local" (runners are processes on this machine), "slurm"
	// (each session is a batch job) or "kubernetes" (each session is a
	// pod). Default "local".
	Kind string `yaml:"kind"`
	// Local is the local backend's settings. Default {} when kind is local.
	Local *LocalBackend `yaml:"local" kind:"local"`
	// Slurm is the Slurm backend's settings. Default {} when kind is
	// slurm.
	Slurm *SlurmBackend `yaml:"slurm" kind:"slurm"`
	// Kubernetes is the Kubernetes backend's settings. Default {} when
	// kind is kubernetes.
	Kubernetes *KubernetesBackend `yaml:"kubernetes" kind:"kubernetes"`
}

// KubernetesBackend runs each session as a pod that runs `airlock run`,
// with a Secret holding its spec and a NetworkPolicy fencing it. Profiles
// may override the pod's options in their own kubernetes block.
type KubernetesBackend struct {
	// Kubeconfig is a kubeconfig file with the gateway's credentials.
	// Default "": the gateway runs in the cluster and uses its pod's
	// service account.
	Kubeconfig string `yaml:"kubeconfig"`
	// Context is the kubeconfig context to use. Default "": its current
	// one.
	Context string `yaml:"context"`
	// Namespace holds every session's pod, secret and policy. Required.
	Namespace string `yaml:"namespace"`
	// Image is the container image the pods run: it must contain airlock
	// and the profiles' programs. Required.
	Image string `yaml:"image"`
	// Airlock is the path of airlock in the image. Default "airlock".
	Airlock string `yaml:"airlock"`
	// ServiceAccount the pods run as (its token is never mounted).
	// Default "": the namespace's default.
	ServiceAccount string `yaml:"service_account"`
	// Prefix starts every object's name ("PREFIX-SESSIONID") and labels
	// them as this gateway's. Gateways sharing a namespace need different
	// prefixes: each deletes the objects of its prefix it has no session
	// for. Default "airlock".
	Prefix string `yaml:"prefix"`
	// GatewayCIDRs are the gateway's addresses as the pods see them: the
	// only peers a session's NetworkPolicy admits, and the only place a
	// pod may connect to besides egress. Required.
	GatewayCIDRs []string `yaml:"gateway_cidrs"`
	// GatewayURL is the gateway's https:// URL as pods reach it; runners
	// register their sessions there. Default "": public_url, or else
	// https://HOSTNAME:PORT of this machine and listen's port.
	GatewayURL string `yaml:"gateway_url"`
	// Egress is what every session's pod may connect to besides the
	// gateway: CIDR[:PORT[-PORT][/tcp|/udp|/sctp]] entries. Default []:
	// nothing.
	Egress []string `yaml:"egress"`
	// UID runs a session whose owner has no account on the gateway's
	// machine; an owner with one runs as its own uid and gid. Never 0.
	// Default 65534 (nobody).
	UID int `yaml:"uid"`
	// GID is the group of such a session's pod. Default 65534 (nogroup).
	GID int `yaml:"gid"`
	// GracePeriod is how long a stopped session's runner has to tear the
	// session down before its pod is killed. Default 30s.
	GracePeriod time.Duration `yaml:"grace_period"`
	// Reconcile is how often the gateway compares its objects in the
	// namespace with its sessions, deletes those no session owns and
	// re-adopts running pods. Default 1m.
	Reconcile time.Duration `yaml:"reconcile"`
	// Service gives each session a ClusterIP Service with only its
	// connectors' ports (fixed ones then, in the pod's own network
	// namespace), owned by its pod, and the gateway reaches the
	// connectors through it instead of the pod's IP. Default false.
	Service bool `yaml:"service"`
}

// LocalBackend runs `airlock run` as a child process of the gateway that
// outlives it.
type LocalBackend struct {
	// Airlock is the airlock binary to start runners with. Default "":
	// the running gateway's own executable.
	Airlock string `yaml:"airlock"`
	// Dir holds one directory per session (spec, events, log). Default
	// "sessions" (in state_dir).
	Dir string `yaml:"dir"`
}

// SlurmBackend submits each session as a batch job that runs `airlock run`
// on a compute node. Profiles may override partition, account, qos and
// sbatch_args in their own slurm block.
type SlurmBackend struct {
	// Airlock is the path of airlock on the compute nodes. Default
	// "airlock" (looked up in the job's PATH).
	Airlock string `yaml:"airlock"`
	// Partition is sbatch --partition. Default "": the cluster's default.
	Partition string `yaml:"partition"`
	// Account is sbatch --account. Default "": the user's default.
	Account string `yaml:"account"`
	// QOS is sbatch --qos. Default "": the account's default.
	QOS string `yaml:"qos"`
	// SbatchArgs are further sbatch options, one per item
	// ("--constraint=gpu"). Default [].
	SbatchArgs []string `yaml:"sbatch_args"`
	// GatewayURL is the gateway's https:// URL as the compute nodes reach
	// it; runners register their sessions there. Default "": public_url,
	// or else https://HOSTNAME:PORT of this machine and listen's port.
	GatewayURL string `yaml:"gateway_url"`
	// NodeAddress is how the gateway reaches a compute node's connectors,
	// with {node} replaced by Slurm's node name ("{node}.ib.example.org").
	// Registrations are accepted only from this address or the node name's.
	// Default "{node}".
	NodeAddress string `yaml:"node_address"`
	// Output is sbatch --output, the job's log of the runner's and the
	// seal's messages, with sbatch's patterns (%j job id, %u user).
	// Default "/dev/null".
	Output string `yaml:"output"`
	// JobPrefix starts every job's name ("PREFIX-SESSIONID"). Gateways
	// sharing a cluster need different prefixes: each cancels the jobs of
	// its prefix that it has no session for. Default "airlock".
	JobPrefix string `yaml:"job_prefix"`
	// Poll is how often squeue is asked about the jobs. Default 5s.
	Poll time.Duration `yaml:"poll"`
	// Reconcile is how often the gateway compares Slurm's airlock jobs
	// with its sessions and cancels jobs no session owns. Default 1m.
	Reconcile time.Duration `yaml:"reconcile"`
}

// Profile is something users can launch. Only the block named by kind may
// be given (desktop, app or vm); it defaults to that kind's defaults.
type Profile struct {
	// Name identifies the profile in URLs, the API and the audit log: 1 to
	// 32 of a-z, 0-9 and "-". Required.
	Name string `yaml:"name"`
	// Title is what the portal shows. Default: the name.
	Title string `yaml:"title"`
	// Description is a sentence the portal shows under the title.
	// Default "".
	Description string `yaml:"description"`
	// Kind is "desktop" (an X desktop through VNC), "app" (a web
	// application) or "vm" (a QEMU virtual machine). Required.
	Kind string `yaml:"kind"`
	// Desktop is the desktop's settings. Default: see DesktopProfile.
	Desktop *DesktopProfile `yaml:"desktop" kind:"desktop"`
	// App is the web application's settings. Required for kind app.
	App *AppProfile `yaml:"app" kind:"app"`
	// VM is the virtual machine's settings. Required for kind vm.
	VM *VMProfile `yaml:"vm" kind:"vm"`
	// CPUs a session gets when the launch does not ask, and the most it
	// may ask for (max 0: no maximum). Default {default: 1, max: 4}.
	CPUs Range[int] `yaml:"cpus"`
	// Memory a session gets when the launch does not ask, and the most it
	// may ask for (0: no limit, no maximum). Default {default: 2G, max: 16G}.
	Memory Range[Size] `yaml:"memory"`
	// Lifetime after which a session is stopped, when the launch does not
	// ask, and the longest it may ask for (0: no limit, no maximum).
	// Default: limits.lifetime_default and limits.lifetime_max.
	Lifetime Range[time.Duration] `yaml:"lifetime"`
	// IdleTimeout stops a session nobody has viewed for this long (0:
	// never). A launch cannot choose it yet, so max only bounds default
	// (0: no maximum). Default: limits.idle_timeout_default and
	// limits.idle_timeout_max.
	IdleTimeout Range[time.Duration] `yaml:"idle_timeout"`
	// Slurm overrides the Slurm backend's job options for this profile;
	// only allowed with backend kind slurm. Default: none.
	Slurm *SlurmProfile `yaml:"slurm"`
	// Kubernetes overrides the Kubernetes backend's pod options for this
	// profile; only allowed with backend kind kubernetes. Default: none.
	Kubernetes *KubernetesProfile `yaml:"kubernetes"`
	// Terms is a text users must accept before their first launch of the
	// profile, and again whenever it changes (each acceptance is audited
	// with the text's SHA-256). Default "": none.
	Terms string `yaml:"terms"`
	// Groups are the groups (from an OpenID provider's groups claim, as
	// of the user's last login) whose members may see and launch the
	// profile; nobody else may, admins included. Default []: everyone.
	Groups []string `yaml:"groups"`
	// Clipboard (desktop and vm) is which way clipboard text may cross
	// between the viewer and the session: both, in (viewer to session
	// only), out (session to viewer only) or none. The session's vnc
	// connector drops the RFB cut text of a refused direction, and the
	// portal hides what cannot work. For RDP in the browser the gateway's
	// relay takes the clipboard channel out (none) or filters it one way
	// (in, out); native RDP clients (rdp.listen), whose TLS goes end to
	// end, cannot be held to less than both. Default "both".
	Clipboard string `yaml:"clipboard"`
	// Record (desktop and vm) records every viewer connection's screen
	// (the server's RFB stream; no keystrokes) in state_dir/recordings,
	// which admins list and download. Default false.
	Record bool `yaml:"record"`
}

// Range is a value a launch may choose, up to a maximum.
type Range[T int | Size | time.Duration] struct {
	// Default is the value when the launch does not choose. Defaults are
	// given where the Range is used.
	Default T `yaml:"default"`
	// Max is the most a launch may ask for; 0 means no maximum. Defaults
	// are given where the Range is used.
	Max T `yaml:"max"`
}

// flow makes YAML write a Range on one line.
func (Range[T]) flow() {}

// DesktopProfile is a TigerVNC Xvnc server and the programs shown in it.
type DesktopProfile struct {
	// Geometry is the screen size, WIDTHxHEIGHT, each 64 to 8192.
	// Default "1280x800".
	Geometry string `yaml:"geometry"`
	// Depth is the colour depth in bits: 8, 16, 24 or 32. Default 24.
	Depth int `yaml:"depth"`
	// Programs are started in the X session, each an argv (a list of
	// strings, the program first), with DISPLAY set. The session ends
	// when Xvnc exits, not when a program does. Default [[xterm]].
	Programs [][]string `yaml:"programs"`
	// VNCPassword makes Xvnc require a fresh random password per session,
	// known only to the connector: a second lock besides the seal. The
	// runner makes it, hands it to the connector (which answers Xvnc's
	// challenge, so users never see it) and writes it for Xvnc in the
	// seal's private /tmp; it reaches no command line, the gateway or the
	// store. Default false.
	VNCPassword bool `yaml:"vnc_password"`
	// RDP serves the desktop to native RDP clients too (through rdp.listen
	// and `airlock rdp`): xrdp runs in the seal as the owner, with no
	// sesman and no PAM, on the seal's loopback, its VNC module bridging
	// to the session's own Xvnc (answering its vnc_password, if set).
	// Needs xrdp and openssl on the node. Default false.
	RDP bool `yaml:"rdp"`
	// RDPServer is the RDP server rdp: true runs in the seal: xrdp (TLS
	// only: the seal and the gateway's ticket are the lock) or shadow,
	// FreeRDP's shadow server sharing the session's Xvnc with NLA: each
	// session gets a one-time password that clients must give inside
	// CredSSP (the portal's page and `airlock rdp` pass it on; the gateway
	// relays it encrypted). Shadow needs freerdp-shadow-cli (Debian's
	// freerdp2-shadow-x11) on the node. Default "xrdp".
	RDPServer string `yaml:"rdp_server"`
	// Drives lets the browser's RDP client redirect drives, printers and
	// smart cards into the session (the rdpdr channel). Default false.
	Drives bool `yaml:"drives"`
	// Xvnc is the X server to run (a TigerVNC Xvnc): a name looked up in
	// PATH on the node, or an absolute path. The gateway adds the display,
	// port, security, geometry and -BlacklistTimeout 0 arguments. Default
	// "Xvnc".
	Xvnc string `yaml:"xvnc"`
	// Kiosk makes the desktop one locked browser window on one site: the
	// session's only program (programs are not started), full screen,
	// with no address bar, devtools, downloads, printing or extensions,
	// held to the site's origin by browser policy written per session,
	// and with no way out of the seal but an HTTP CONNECT proxy the
	// runner runs outside it, to the site's HOST:PORT and allow only.
	// Closing the browser ends the session. Default: none.
	Kiosk *KioskProfile `yaml:"kiosk"`
}

// KioskProfile is a kiosk desktop's browser and what it may reach.
type KioskProfile struct {
	// URL is the site: https:// with a host name or IP address (the
	// session's proxy tunnels TLS only). Required.
	URL string `yaml:"url"`
	// Browser is chromium or firefox (Debian's firefox-esr). Firefox's
	// policies hold it to the site's host on any port; the session's
	// proxy holds it to HOST:PORT. Default "chromium".
	Browser string `yaml:"browser"`
	// Allow are more HOST:PORT destinations the session's proxy lets
	// through, and whose https origins the browser may open (a login
	// page the site redirects to). Default [].
	Allow []string `yaml:"allow"`
	// CAFile is a PEM file of CA certificates the kiosk's browser trusts
	// besides the system's, for a site with a private CA, read when a
	// session starts. Default "": none.
	CAFile string `yaml:"ca_file"`
}

func (k *KioskProfile) setDefaults() { k.Browser, k.Allow = "chromium", []string{} }

// AppProfile is a program serving HTTP inside the seal, on a TCP port of
// the seal's loopback or on a UNIX socket; set exactly one of port and
// socket. Arguments of command may contain the placeholders {port},
// {socket} and {prefix} (the URL path the gateway serves the session
// under, ending in "/": "/" on the app's own host, /s/ID/app/ with
// apps.same_origin).
type AppProfile struct {
	// Command is the program and its arguments. Required.
	Command []string `yaml:"command"`
	// Port is the TCP port the app listens on at 127.0.0.1 in the seal,
	// 1 to 65535. Default 0: use socket.
	Port int `yaml:"port"`
	// Socket is the absolute path of the UNIX socket the app listens on
	// (in the session's private /tmp, say), at most 107 bytes.
	// Default "": use port.
	Socket string `yaml:"socket"`
	// StripPrefix (with apps.same_origin only) makes the gateway remove
	// the session's URL prefix before passing a request on, for apps that
	// use relative links. False passes the full path, for apps told their
	// prefix with {prefix}. On the app's own host there is no prefix.
	// Default false.
	StripPrefix bool `yaml:"strip_prefix"`
}

// VMProfile is a QEMU virtual machine booting one of the images. Its cpus
// and memory come from the image, so a vm profile sets neither.
type VMProfile struct {
	// Image is the name of an entry in images. Required.
	Image string `yaml:"image"`
}

// Image is a virtual machine's master image on the nodes and how to boot
// it. Sessions never write to the master: each gets a qcow2 overlay on it,
// deleted when the session ends (or kept in the owner's home, when
// persistent_allowed and the launch asks).
type Image struct {
	// Name is what vm profiles call the image: 1 to 32 of a-z, 0-9 and
	// "-". Required.
	Name string `yaml:"name"`
	// Path is the master image's absolute path on the nodes, readable by
	// the accounts sessions run as, not under /tmp, /run, /var/tmp or
	// /dev/shm (the seal has its own). Required.
	Path string `yaml:"path"`
	// Format is the file's format, which `qemu-img info` must agree with:
	// qcow2, raw, vmdk, vdi, or iso (booted from a CD-ROM drive, with no
	// disk). Default "qcow2".
	Format string `yaml:"format"`
	// OS is the guest's family: "linux" (virtio disk and network, folders
	// over 9p), "windows" (IDE and e1000, the owner's folder over SMB) or
	// "other" (IDE and e1000, folders over 9p). Default "linux".
	OS string `yaml:"os"`
	// CPUs a session gets when the launch does not ask, and the most it may
	// ask for (max 0: no maximum). Default {default: 1, max: 4}.
	CPUs Range[int] `yaml:"cpus"`
	// Memory a session gets when the launch does not ask, and the most it
	// may ask for (max 0: no maximum). Default {default: 2G, max: 8G}.
	Memory Range[Size] `yaml:"memory"`
	// Firmware is "bios" (SeaBIOS) or "uefi" (OVMF, which the nodes must
	// have: Debian's ovmf package). Default "bios".
	Firmware string `yaml:"firmware"`
	// RDP says the guest serves RDP on port 3389; it is forwarded to
	// 127.0.0.1:3389 inside the seal and nowhere else. Default false.
	RDP bool `yaml:"rdp"`
	// RDPPassword "generate" gives every session of the image a fresh
	// one-time password, handed to the guest as an SMBIOS OEM string
	// (type 11, "airlock.rdp_password=PASSWORD") that its startup script
	// sets for the RDP account (see the README), and shown only to the
	// session's owner (session page, the owner's .airlock file). Needs
	// rdp. Default "": none.
	RDPPassword string `yaml:"rdp_password"`
	// Kernel boots this Linux kernel directly (QEMU -kernel), without a
	// boot loader in the image. Absolute path. Default "".
	Kernel string `yaml:"kernel"`
	// Initrd is the initramfs for kernel. Default "".
	Initrd string `yaml:"initrd"`
	// Append is the kernel command line for kernel. Default "".
	Append string `yaml:"append"`
	// Share is the session owner's folder shown in the guest. Default
	// {path: "~", read_only: false}.
	Share ImageShare `yaml:"share"`
	// Volumes are more host folders shown in the guest over 9p, like
	// farhi/remote-desktop's dir_mounts (not for windows guests).
	// Default [].
	Volumes []ImageVolume `yaml:"volumes"`
	// PersistentAllowed lets a launch ask to keep its disk (keep_disk):
	// the overlay then lives in the owner's home, in
	// ~/.local/share/airlock/vm/NAME.qcow2, and the next session of this
	// image starts from it. Default false.
	PersistentAllowed bool `yaml:"persistent_allowed"`
	// GPU lists PCI addresses (0000:01:00.0) of devices bound to vfio-pci
	// on the nodes, passed through to every session of the image; see the
	// README for the host setup. Default [].
	GPU []string `yaml:"gpu"`
}

// setDefaults is called on each item of images before the file's keys.
func (im *Image) setDefaults() {
	*im = Image{Format: "qcow2", OS: "linux", Firmware: "bios",
		CPUs: Range[int]{Default: 1, Max: 4}, Memory: Range[Size]{Default: 2 * GiB, Max: 8 * GiB},
		Share: ImageShare{Path: "~"}, Volumes: []ImageVolume{}, GPU: []string{}}
}

// ImageShare is the owner's folder in a guest: over QEMU's SMB server
// (windows guests see \\10.0.2.4\qemu) or 9p with mount tag "home"
// (mount -t 9p -o trans=virtio home /mnt).
type ImageShare struct {
	// Path is "~" (the owner's home), "~/DIR" (a folder in it), an
	// absolute path, or "" for no share. Default "~".
	Path string `yaml:"path"`
	// ReadOnly stops the guest writing to the folder (9p only: QEMU's SMB
	// share cannot be read-only). Default false.
	ReadOnly bool `yaml:"read_only"`
}

// ImageVolume is a host folder shown to guests over 9p.
type ImageVolume struct {
	// Path is the folder's absolute path on the nodes. Required.
	Path string `yaml:"path"`
	// Tag is the 9p mount tag the guest mounts it by: 1 to 31 of A-Z, a-z,
	// 0-9, _ and -, not "home". Required.
	Tag string `yaml:"tag"`
	// ReadOnly stops the guest writing to it. Default false.
	ReadOnly bool `yaml:"read_only"`
}

// SlurmProfile overrides the Slurm backend's job options for one profile.
type SlurmProfile struct {
	// Partition replaces backend.slurm.partition. Default "": keep it.
	Partition string `yaml:"partition"`
	// Account replaces backend.slurm.account. Default "": keep it.
	Account string `yaml:"account"`
	// QOS replaces backend.slurm.qos. Default "": keep it.
	QOS string `yaml:"qos"`
	// SbatchArgs are added after backend.slurm.sbatch_args. Default [].
	SbatchArgs []string `yaml:"sbatch_args"`
}

// KubernetesProfile overrides the Kubernetes backend's pod options for
// one profile.
type KubernetesProfile struct {
	// Image replaces backend.kubernetes.image. Default "": keep it.
	Image string `yaml:"image"`
	// ServiceAccount replaces backend.kubernetes.service_account.
	// Default "": keep it.
	ServiceAccount string `yaml:"service_account"`
	// NodeSelector are KEY=VALUE node labels the pod must run on.
	// Default [].
	NodeSelector []string `yaml:"node_selector"`
	// Tolerations let the pod run on nodes with these taints. Default [].
	Tolerations []KubernetesToleration `yaml:"tolerations"`
	// Volumes are persistent volume claims mounted in the pod, such as
	// the user's home. Default [].
	Volumes []KubernetesVolume `yaml:"volumes"`
	// RuntimeClass is the pod's runtimeClassName (gvisor, kata).
	// Default "": the cluster's default.
	RuntimeClass string `yaml:"runtime_class"`
	// WritableRoot lets the container write to its root file system
	// (a program that insists). Default false: read-only.
	WritableRoot bool `yaml:"writable_root"`
	// Egress is added to backend.kubernetes.egress for this profile's
	// sessions. Default [].
	Egress []string `yaml:"egress"`
}

// KubernetesToleration is a pod toleration, as Kubernetes spells it.
type KubernetesToleration struct {
	// Key is the taint's key. Required unless operator is Exists.
	Key string `yaml:"key"`
	// Operator is Equal or Exists. Default "Equal".
	Operator string `yaml:"operator"`
	// Value is the taint's value (Equal). Default "".
	Value string `yaml:"value"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute. Default "":
	// all.
	Effect string `yaml:"effect"`
}

// KubernetesVolume mounts a persistent volume claim in a session's pod.
type KubernetesVolume struct {
	// Claim is the PersistentVolumeClaim's name, with {user} replaced by
	// the session's owner. Required.
	Claim string `yaml:"claim"`
	// MountPath is where it appears in the pod. Required, absolute.
	MountPath string `yaml:"mount_path"`
	// SubPath mounts a directory of the volume. Default "": all of it.
	SubPath string `yaml:"sub_path"`
	// ReadOnly mounts it read-only. Default false.
	ReadOnly bool `yaml:"read_only"`
}

// Apps says where web apps are served. A web app's pages are another
// user's code: each session's app gets an origin of its own, so its pages
// cannot use a viewer's gateway login.
type Apps struct {
	// Domain is the parent of the app hosts: session ID's app is served at
	// https://ID.DOMAIN[:port]/ by the gateway's own listener, routed by
	// the Host header. Set up once: a wildcard DNS name *.DOMAIN pointing
	// at the gateway, and a certificate for *.DOMAIN (in tls.cert_file
	// besides the gateway's own name; the self-signed certificate includes
	// it). DOMAIN must not be the gateway's own host name nor a parent of
	// it. Default "": apps.localhost, which browsers resolve to loopback
	// by themselves: it works only for a gateway listening on loopback,
	// and is refused otherwise unless apps.same_origin is set.
	Domain string `yaml:"domain"`
	// SameOrigin serves apps on the gateway's own origin under /s/ID/app/,
	// as Open OnDemand does. RISK: a page of Alice's app, opened by Bob,
	// is then at the gateway's address; airlock makes every app answer
	// carry "Content-Security-Policy: sandbox allow-scripts allow-forms
	// allow-popups allow-downloads", so the page runs with an opaque origin
	// and cannot call the API with Bob's login, but that protects only
	// browsers that honour CSP sandbox, and sandboxed apps lose their
	// cookies and storage, which many apps need. Default false.
	SameOrigin bool `yaml:"same_origin"`
}

// Forward is `airlock forward`: a user on a node (a batch job, a
// workstation) publishes a web app there at https://NAME-USER.DOMAIN/
// (apps.domain), through a tunnel the node dials out to the gateway, with
// the sign-in and share rules of app sessions.
type Forward struct {
	// MaxPerUser is how many forwards one user may have live. 0: forwards
	// are off. Default 5.
	MaxPerUser int `yaml:"max_per_user"`
	// BytesPerSecond caps what one forward carries, both ways together.
	// 0: no cap. Default 0.
	BytesPerSecond Size `yaml:"bytes_per_second"`
	// MaxStreams is how many connections may be open at once through one
	// forward's tunnel. Default 256.
	MaxStreams int `yaml:"max_streams"`
	// Grace is how long a forward whose tunnel is down (a gateway restart,
	// a network blink) waits for the node to dial back before it ends.
	// Default 2m.
	Grace time.Duration `yaml:"grace"`
}

// Limits protect the machine and share it fairly. The lifetime and idle
// timeout keys are what profiles inherit; a profile may not exceed them.
type Limits struct {
	// MaxSessions is how many sessions may be active at once in all.
	// 0: no limit. Default 100.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerUser is how many sessions one user may have active.
	// 0: no limit. Default 4.
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// MaxLoad refuses launches while the node's 1-minute load average
	// divided by its CPU count is above it (2.0: twice as many runnable
	// tasks as CPUs). 0: no check. Local backend only: with Slurm the
	// scheduler places and queues sessions. Default 2.0.
	MaxLoad float64 `yaml:"max_load"`
	// MinFreeMemory refuses launches while the node's available memory is
	// below it. 0: no check. Local backend only. Default 512M.
	MinFreeMemory Size `yaml:"min_free_memory"`
	// LifetimeDefault is profiles' default lifetime. 0: no limit.
	// Default 8h.
	LifetimeDefault time.Duration `yaml:"lifetime_default"`
	// LifetimeMax is the longest lifetime any profile or launch may set.
	// 0: no maximum. Default 24h.
	LifetimeMax time.Duration `yaml:"lifetime_max"`
	// IdleTimeoutDefault is profiles' default idle timeout. 0: never.
	// Default 1h.
	IdleTimeoutDefault time.Duration `yaml:"idle_timeout_default"`
	// IdleTimeoutMax is the longest idle timeout any profile or launch may
	// set. 0: no maximum. Default 8h.
	IdleTimeoutMax time.Duration `yaml:"idle_timeout_max"`
	// SingleShotGrace is how long a single-shot session outlives its last
	// viewer, so a reload does not end it. Default 30s.
	SingleShotGrace time.Duration `yaml:"single_shot_grace"`
}

// Auth is how people log in.
type Auth struct {
	// Methods are tried in order: a password is checked against each
	// local and ldap method until one accepts it or refuses it outright
	// (an unreachable directory passes to the next), and a request from a
	// trusted proxy is believed by a header method. At least one is
	// required. Default [{kind: local}].
	Methods []AuthMethod `yaml:"methods"`
	// RateLimit slows down password guessing. Defaults: see RateLimit.
	RateLimit RateLimit `yaml:"rate_limit"`
	// SessionTTL is how long a login (the portal cookie) lasts.
	// Default 12h.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// TOTP is the second factor for password logins. Defaults: see TOTP.
	TOTP TOTP `yaml:"totp"`
	// OnUserRemoved is what happens to the running sessions of a user
	// removed from the local password file: "stop" ends them,
	// "keep" leaves them to their lifetime. Either way the user's logins,
	// tokens and open viewers end at once. Default "stop".
	OnUserRemoved string `yaml:"on_user_removed"`
}

// AuthMethod is one way to log in. Which keys it may have depends on its
// kind.
type AuthMethod struct {
	// Kind is "local" (a password file), "ldap" (a bind to a directory),
	// "header" (a user name set by a trusted reverse proxy), "oidc" (an
	// OpenID Connect provider: a button on the login page), "imap" or
	// "smtp" (a login to the site's mail server) or "email" (a login link
	// e-mailed through the mail relay). Required.
	Kind string `yaml:"kind"`

	// File (local) is the password file, one NAME:ROLE:HASH line per user
	// (ROLE admin or user; HASH argon2id or bcrypt; the format is the
	// auth/local package's). Default "passwd" (in state_dir).
	File string `yaml:"file" kind:"local"`
	// MailTemplate (local) makes a user's e-mail address (for ready
	// e-mails) from their name, which replaces {user}:
	// "{user}@example.org". Default "": local users have none.
	MailTemplate string `yaml:"mail_template" kind:"local"`

	// URL (ldap) is the directory server, ldaps://host[:port] or
	// ldap://host[:port]. Plain ldap:// needs start_tls, except to a
	// loopback address. (imap) is imaps://host[:993] (implicit TLS) or
	// imap://host[:143] (STARTTLS, always); (smtp) smtps://host[:465] or
	// smtp://host[:587] (STARTTLS, always). Required.
	URL string `yaml:"url" kind:"ldap,imap,smtp"`
	// StartTLS (ldap) upgrades an ldap:// connection with StartTLS.
	// Default false.
	StartTLS bool `yaml:"start_tls" kind:"ldap"`
	// CAFile (ldap, imap, smtp) holds the CA certificates (PEM) the server's
	// certificate must chain to. Default "": the system's roots.
	CAFile string `yaml:"ca_file" kind:"ldap,imap,smtp"`
	// BindDNTemplate (ldap) makes the user's DN from the name typed, which
	// replaces {user} (escaped): "uid={user},ou=people,dc=example,dc=org".
	// Set this or search. Default "".
	BindDNTemplate string `yaml:"bind_dn_template" kind:"ldap"`
	// Search (ldap) finds the user's DN with a search, then binds as it.
	// Set this or bind_dn_template. Default: none.
	Search *LDAPSearch `yaml:"search" kind:"ldap"`
	// AdminGroup (ldap) is the DN of a group whose members (member or
	// uniqueMember) are airlock admins. Default "": none.
	AdminGroup string `yaml:"admin_group" kind:"ldap"`
	// GroupsBaseDN (ldap), if set, is where the user's groups are looked
	// up at each login: the cn of every group under it naming the user as
	// member or uniqueMember. They decide profiles[].groups. Default "".
	GroupsBaseDN string `yaml:"groups_base_dn" kind:"ldap"`
	// MailAttribute (ldap) is the attribute of the user's entry holding
	// their e-mail address, read at each login (for ready e-mails). A
	// value that is not one plain address is ignored. "": none. Default
	// "mail".
	MailAttribute string `yaml:"mail_attribute" kind:"ldap"`
	// Timeout (ldap, imap, smtp) bounds connecting and each operation
	// (imap, smtp: the whole login). Default 10s.
	Timeout time.Duration `yaml:"timeout" kind:"ldap,imap,smtp"`
	// MinTLS (imap, smtp) is the oldest TLS version spoken: "1.2" or
	// "1.3" ("1.0", "1.1" only for a server that cannot do better). A
	// server offering less is refused with a log line, never spoken to in
	// an older version. Default "1.2".
	MinTLS string `yaml:"min_tls" kind:"imap,smtp"`
	// Login (imap, smtp) makes the mail server's login from the user name
	// typed, which replaces {user}: "{user}@example.org". Default
	// "{user}".
	Login string `yaml:"login" kind:"imap,smtp"`

	// Header (header) is the request header holding the user name.
	// Default "X-Forwarded-User".
	Header string `yaml:"header" kind:"header"`
	// TrustedProxies (header) are the addresses (IPs or CIDRs) the header
	// is believed from; from anywhere else it is removed. Required, and a
	// prefix that matches every address (0.0.0.0/0, ::/0, ::ffff:0:0/96)
	// is refused: anyone could then log in as anyone.
	TrustedProxies []string `yaml:"trusted_proxies" kind:"header"`

	// Name (oidc) identifies the provider in URLs
	// (/auth/oidc/NAME/callback, the redirect URI to register there) and
	// logs: lowercase letters, digits and '-'. Required.
	Name string `yaml:"name" kind:"oidc"`
	// Title (oidc) is the login button's label ("Log in with TITLE").
	// Default: the name.
	Title string `yaml:"title" kind:"oidc"`
	// Issuer (oidc) is the provider's issuer URL; its discovery document
	// is read from ISSUER/.well-known/openid-configuration. https://
	// (http:// only to a loopback address). Required.
	Issuer string `yaml:"issuer" kind:"oidc"`
	// ClientID (oidc) is airlock's client id at the provider. Required.
	ClientID string `yaml:"client_id" kind:"oidc"`
	// ClientSecretFile (oidc) holds the client secret (trailing newline
	// ignored). Default "": a public client (PKCE only).
	ClientSecretFile string `yaml:"client_secret_file" kind:"oidc"`
	// Scopes (oidc) asked for besides openid. Default [profile, email].
	Scopes []string `yaml:"scopes" kind:"oidc"`
	// UserClaim (oidc) is the claim holding the user name (from the ID
	// token, else from userinfo). Default "preferred_username".
	UserClaim string `yaml:"user_claim" kind:"oidc"`
	// UserDomain (oidc), if set, is a domain the user claim must end with
	// ("alice@example.org"); it is cut off to make the user name, and a
	// login from any other domain is refused. Default "": the claim is the
	// user name as it is.
	UserDomain string `yaml:"user_domain" kind:"oidc"`
	// GroupsClaim (oidc) is the claim holding the user's groups (a list
	// of strings). Default "groups".
	GroupsClaim string `yaml:"groups_claim" kind:"oidc"`
	// Domains (email) are the domains whose addresses may ask for a login
	// link; the user name is the address's local part. Required.
	Domains []string `yaml:"domains" kind:"email"`
	// LinkTTL (email) is how long a link works. Default 10m.
	LinkTTL time.Duration `yaml:"link_ttl" kind:"email"`
	// PerAddress (email) is how many links one address may ask for in
	// window. Default 3.
	PerAddress int `yaml:"per_address" kind:"email"`
	// PerClient (email) is how many links one client address may ask for
	// in window. Default 10.
	PerClient int `yaml:"per_client" kind:"email"`
	// Window (email) is the rate limits' window. Default 15m.
	Window time.Duration `yaml:"window" kind:"email"`

	// AdminGroups (oidc) are groups whose members are airlock admins,
	// decided again at each login. Default [].
	AdminGroups []string `yaml:"admin_groups" kind:"oidc"`

	// AdminUsers are users who are airlock admins when this method lets
	// them in. Default [].
	AdminUsers []string `yaml:"admin_users"`
}

// LDAPSearch finds a user's DN by searching the directory.
type LDAPSearch struct {
	// BindDN is the service account the search binds as. Default "":
	// search anonymously.
	BindDN string `yaml:"bind_dn"`
	// BindPasswordFile holds the service account's password (trailing
	// newline ignored). Required with bind_dn. Default "".
	BindPasswordFile string `yaml:"bind_password_file"`
	// BaseDN is where the search starts. Required.
	BaseDN string `yaml:"base_dn"`
	// Filter selects the user; {user} is replaced by the name typed
	// (escaped). Must match exactly one entry. Default "(uid={user})".
	Filter string `yaml:"filter"`
}

// TOTP is the second factor (an authenticator app's codes) for users who
// log in with a password (local, ldap, imap, smtp). Anyone may enrol in
// the portal; members of required_groups must before anything else.
type TOTP struct {
	// RequiredGroups are the groups (as LDAP names them at login) whose
	// members must have a second factor; "*" is every password user.
	// Default [] (optional for everyone).
	RequiredGroups []string `yaml:"required_groups"`
	// Issuer is the name the user's app shows for the account. Default
	// "airlock".
	Issuer string `yaml:"issuer"`
	// MaxFailures wrong codes per user in Window lock the second step
	// until the window has passed. Default 5.
	MaxFailures int `yaml:"max_failures"`
	// Window is the span wrong codes are counted in. Default 15m.
	Window time.Duration `yaml:"window"`
	// PendingTTL is how long a browser has between its password and its
	// code. Default 5m.
	PendingTTL time.Duration `yaml:"pending_ttl"`
}

// RateLimit bounds failed logins in a sliding window. Past a bound, logins
// for that user or from that address are refused until the window has
// passed.
type RateLimit struct {
	// PerUser is how many failed logins one user name may have in window.
	// 0: no limit. Default 5.
	PerUser int `yaml:"per_user"`
	// PerAddress is how many failed logins one client address may have in
	// window. 0: no limit. Default 20.
	PerAddress int `yaml:"per_address"`
	// Window is the length of the sliding window. Default 15m.
	Window time.Duration `yaml:"window"`
}

// Log is the gateway's own log.
type Log struct {
	// Format is "text" or "json" (one object per line). Default "text".
	Format string `yaml:"format"`
	// Level is the least severe level written: "debug", "info", "warn" or
	// "error". Default "info".
	Level string `yaml:"level"`
}

// Recordings are the VNC and RDP recordings of profiles with record: true,
// kept out of every session's reach.
type Recordings struct {
	// Dir is where they are kept. Default state_dir/recordings. Several
	// gateways pointed at one shared filesystem here list and replay each
	// other's recordings; every seal hides it, as it hides the state
	// directory.
	Dir string `yaml:"dir"`
	// Retention removes a recording this long after it ended. Default
	// 720h (30 days); at least 1h.
	Retention time.Duration `yaml:"retention"`
	// MaxSize ends one viewer connection's recording at this many bytes
	// of RFB data with its framing, 8 bytes a block (the file is
	// gzip-compressed, smaller), and the connection with it: nothing is
	// viewed unrecorded (a new connection is recorded afresh).
	// Default 1G; at least 1M.
	MaxSize Size `yaml:"max_size"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	// Enabled serves /metrics (Prometheus text format) to admins and to
	// loopback clients. Default false.
	Enabled bool `yaml:"enabled"`
}

//go:embed defaults.yaml
var defaultsYAML []byte

// DefaultsYAML returns defaults.yaml: Default as a commented example that
// documents every key. `airlock config defaults` prints it.
func DefaultsYAML() []byte { return slices.Clone(defaultsYAML) }

// Default returns the embedded configuration: the gateway on
// 127.0.0.1:8443 with a self-signed certificate, the local backend, one
// desktop profile (Xvnc with an xterm) and the local password file.
func Default() Config {
	c := Config{
		Listen:   "127.0.0.1:8443",
		Store:    Store{Driver: "sqlite"},
		Backend:  defaultBackend("local"),
		Limits:   defaultLimits(),
		Forward:  Forward{MaxPerUser: 5, MaxStreams: 256, Grace: 2 * time.Minute},
		AuditLog: "audit.log",
		Auth: Auth{
			Methods:       []AuthMethod{defaultMethod("local")},
			RateLimit:     RateLimit{PerUser: 5, PerAddress: 20, Window: 15 * time.Minute},
			TOTP:          TOTP{RequiredGroups: []string{}, Issuer: "airlock", MaxFailures: 5, Window: 15 * time.Minute, PendingTTL: 5 * time.Minute},
			SessionTTL:    12 * time.Hour,
			OnUserRemoved: "stop",
		},
		Log:        Log{Format: "text", Level: "info"},
		RDP:        RDP{MaxCertLifetime: 12 * time.Hour},
		Recordings: Recordings{Retention: 720 * time.Hour, MaxSize: GiB},
	}
	p := defaultProfile("desktop")
	p.Name = "desktop"
	p.Title = "Linux desktop"
	p.Description = "An X desktop (IceWM's panel and menu, a terminal, the Xfe file manager), in your browser."
	c.Profiles = []Profile{p}
	c.inherit(nil)
	normalize(reflect.ValueOf(&c).Elem())
	return c
}

func defaultLimits() Limits {
	return Limits{
		MaxSessions:        100,
		MaxSessionsPerUser: 4,
		MaxLoad:            2.0,
		MinFreeMemory:      512 * MiB,
		LifetimeDefault:    8 * time.Hour,
		LifetimeMax:        24 * time.Hour,
		IdleTimeoutDefault: time.Hour,
		IdleTimeoutMax:     8 * time.Hour,
		SingleShotGrace:    30 * time.Second,
	}
}

// kinded is a struct whose keys depend on its kind key. reset sets it to
// the defaults of kind, which is one of kinds.
type kinded interface {
	kinds() []string
	reset(kind string)
}

var backendKinds = []string{"local", "slurm", "kubernetes"}

func (b *Backend) kinds() []string   { return backendKinds }
func (b *Backend) reset(kind string) { *b = defaultBackend(kind) }

func defaultBackend(kind string) Backend {
	b := Backend{Kind: kind}
	switch kind {
	case "local":
		b.Local = &LocalBackend{Dir: "sessions"}
	case "slurm":
		b.Slurm = &SlurmBackend{Airlock: "airlock", SbatchArgs: []string{}, NodeAddress: "{node}", Output: "/dev/null",
			JobPrefix: "airlock", Poll: 5 * time.Second, Reconcile: time.Minute}
	case "kubernetes":
		b.Kubernetes = &KubernetesBackend{Airlock: "airlock", Prefix: "airlock", GatewayCIDRs: []string{}, Egress: []string{},
			UID: 65534, GID: 65534, GracePeriod: 30 * time.Second, Reconcile: time.Minute}
	}
	return b
}

var profileKinds = []string{"desktop", "app", "vm"}

func (p *Profile) kinds() []string   { return profileKinds }
func (p *Profile) reset(kind string) { *p = defaultProfile(kind) }

// defaultProfile is a profile of kind before the file is read. Lifetime
// and IdleTimeout come from limits afterwards (Config.inherit).
func defaultProfile(kind string) Profile {
	p := Profile{
		Kind:      kind,
		CPUs:      Range[int]{Default: 1, Max: 4},
		Groups:    []string{},
		Memory:    Range[Size]{Default: 2 * GiB, Max: 16 * GiB},
		Clipboard: "both",
	}
	switch kind {
	case "desktop":
		p.Desktop = &DesktopProfile{
			Geometry:    "1280x800",
			Depth:       24,
			Programs:    [][]string{{"icewm-session"}, {"xterm"}},
			VNCPassword: false,
			RDP:         false,
			RDPServer:   "xrdp",
			Drives:      false,
			Xvnc:        "Xvnc",
		}
	case "app":
		p.App = &AppProfile{Command: []string{}}
	case "vm":
		p.VM = &VMProfile{}
	}
	return p
}

// setDefaults is called on a block the file gives that has no default
// value (it is nil).
func (s *LDAPSearch) setDefaults() { s.Filter = "(uid={user})" }

var methodKinds = []string{"local", "ldap", "header", "oidc", "imap", "smtp", "email"}

func (m *AuthMethod) kinds() []string   { return methodKinds }
func (m *AuthMethod) reset(kind string) { *m = defaultMethod(kind) }

func defaultMethod(kind string) AuthMethod {
	m := AuthMethod{Kind: kind, AdminUsers: []string{}}
	switch kind {
	case "local":
		m.File = "passwd"
	case "ldap":
		m.Timeout = 10 * time.Second
		m.MailAttribute = "mail"
	case "header":
		m.Header = "X-Forwarded-User"
		m.TrustedProxies = []string{}
	case "email":
		m.Domains = []string{}
		m.LinkTTL, m.PerAddress, m.PerClient, m.Window = 10*time.Minute, 3, 10, 15*time.Minute
	case "imap", "smtp":
		m.Timeout = 10 * time.Second
		m.MinTLS = "1.2"
		m.Login = "{user}"
	case "oidc":
		m.Scopes = []string{"profile", "email"}
		m.UserClaim = "preferred_username"
		m.GroupsClaim = "groups"
		m.AdminGroups = []string{}
	}
	return m
}

// inherit fills what profiles take from elsewhere and the file left unset:
// an empty title from the name, lifetime and idle timeout from limits. set
// reports whether the file gave a key (nil: nothing was given).
func (c *Config) inherit(set map[string]bool) {
	for i := range c.Profiles {
		p := &c.Profiles[i]
		at := func(key string) bool { return set[fmt.Sprintf("profiles[%d].%s", i, key)] }
		if p.Title == "" {
			p.Title = p.Name
		}
		if !at("lifetime.default") {
			p.Lifetime.Default = c.Limits.LifetimeDefault
		}
		if !at("lifetime.max") {
			p.Lifetime.Max = c.Limits.LifetimeMax
		}
		if !at("idle_timeout.default") {
			p.IdleTimeout.Default = c.Limits.IdleTimeoutDefault
		}
		if !at("idle_timeout.max") {
			p.IdleTimeout.Max = c.Limits.IdleTimeoutMax
		}
	}
}

// maxFileSize bounds what Load reads; a config file is a few kilobytes.
const maxFileSize = 1 << 20

// Load reads and checks the file at path. Path "" means no file: Default.
// On a bad file the error is Errors, holding at most maxReported problems
// (Check returns them all).
func Load(path string) (Config, error) {
	if path == "" {
		return Default(), nil
	}
	c, errs := load(path)
	return c, errs.truncate(maxReported)
}

// Parse checks data as the contents of a file called name (used in errors
// only). On a bad file the error is Errors, holding at most maxReported
// problems.
func Parse(name string, data []byte) (Config, error) {
	c, errs := parse(name, data)
	return c, errs.truncate(maxReported)
}

// Check reads and checks the file at path, for `airlock config check`. It
// returns nil or Errors with every problem found, in file order.
func Check(path string) error {
	_, errs := load(path)
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func load(path string) (Config, Errors) {
	fail := func(err error) (Config, Errors) {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
		}
		return Config{}, Errors{{File: path, Msg: err.Error()}}
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return fail(err)
	}
	if len(data) > maxFileSize {
		return Config{}, Errors{{File: path, Msg: fmt.Sprintf("larger than %d bytes; this is not a config file", maxFileSize)}}
	}
	return parse(path, data)
}

func parse(name string, data []byte) (Config, Errors) {
	c := Default()
	d := newDecoder(name)
	d.decode(data, &c)
	if !d.fatal {
		c.inherit(d.set)
		normalize(reflect.ValueOf(&c).Elem())
		v := &validator{file: name, lines: d.lines, set: d.set}
		v.config(&c)
		d.errs = append(d.errs, v.keep(d.errs)...)
	}
	if len(d.errs) > 0 {
		d.errs.sort()
		return Config{}, d.errs
	}
	return c, nil
}

// ApplyFlags applies `airlock serve`'s --listen and --state-dir to c; an
// empty value changes nothing. A relative state directory is taken from
// the working directory.
func (c *Config) ApplyFlags(listen, stateDir string) error {
	if listen != "" {
		if err := checkListen(listen); err != nil {
			return fmt.Errorf("--listen %q: %v", listen, err)
		}
		c.Listen = listen
	}
	if stateDir != "" {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return fmt.Errorf("--state-dir %q: %v", stateDir, err)
		}
		c.StateDir = abs
	}
	return nil
}

// DefaultStateDir is the state directory when neither the file nor a flag
// names one: $XDG_STATE_HOME/airlock, or $HOME/.local/state/airlock when
// XDG_STATE_HOME is unset or not absolute (as the XDG Base Directory
// specification says). getenv is os.Getenv outside tests.
func DefaultStateDir(getenv func(string) string) (string, error) {
	if x := getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "airlock"), nil
	}
	home := getenv("HOME")
	if !filepath.IsAbs(home) {
		return "", errors.New("no state directory: HOME is not set (set state_dir or --state-dir)")
	}
	return filepath.Join(home, ".local", "state", "airlock"), nil
}

// ResolvePaths sets StateDir to DefaultStateDir when empty, then makes the
// relative paths of the config (tls.cert_file, tls.key_file, audit_log,
// backend.local.dir and the auth methods' file, ca_file and
// bind_password_file) absolute under it. Call it after ApplyFlags.
func (c *Config) ResolvePaths(getenv func(string) string) error {
	if c.StateDir == "" {
		dir, err := DefaultStateDir(getenv)
		if err != nil {
			return err
		}
		c.StateDir = dir
	}
	under := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(c.StateDir, *p)
		}
	}
	under(&c.TLS.CertFile)
	under(&c.TLS.KeyFile)
	under(&c.AuditLog)
	under(&c.Store.PasswordFile)
	under(&c.Store.MasterKeyFile)
	if c.Backend.Local != nil {
		under(&c.Backend.Local.Dir)
	}
	for i := range c.Auth.Methods {
		m := &c.Auth.Methods[i]
		under(&m.File)
		under(&m.CAFile)
		under(&m.ClientSecretFile)
		if m.Search != nil {
			under(&m.Search.BindPasswordFile)
		}
	}
	if c.Mail != nil {
		under(&c.Mail.CAFile)
		under(&c.Mail.PasswordFile)
	}
	return nil
}

// Profile returns the profile called name, or false.
func (c *Config) Profile(name string) (Profile, bool) {
	for _, p := range c.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, e.g. 127.0.0.1:8443 or :443")
	}
	if !isPort(port, true) {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Image returns the image called name, or false.
func (c *Config) Image(name string) (Image, bool) {
	for _, im := range c.Images {
		if im.Name == name {
			return im, true
		}
	}
	return Image{}, false
}
