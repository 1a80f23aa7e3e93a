package seal

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// setupIPCUTS fills the seal's own IPC and UTS namespaces (issue 9 item
// 3): a host name of its own that resolves inside, and a fresh POSIX
// message queue file system. SysV IPC needs nothing: a new IPC namespace
// starts empty.
func (in *initProc) setupIPCUTS() {
	name := Hostname(in.plan.ID)
	if err := unix.Sethostname([]byte(name)); err != nil {
		in.warn("set the seal's host name: %v", err)
		return
	}
	// Programs that resolve their own host name (Java's getLocalHost, some
	// licence clients) would fail without a line for it: DNS is unreachable.
	if err := bindHosts(name); err != nil {
		in.warn("add %s to /etc/hosts inside: %v", name, err)
	}
	// The host's queues are not visible once the IPC namespace is new, but
	// a mount of the host's mqueue instance would still show them.
	if _, err := os.Stat("/dev/mqueue"); err == nil {
		if err := unix.Mount("mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			in.warn("mount a private /dev/mqueue: %v", err)
		}
	}
}

// Hostname is the host name a session's seal gets: its id when that is a
// valid host name label, "airlock" otherwise.
func Hostname(id string) string {
	if len(id) == 0 || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' {
		return "airlock"
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return "airlock"
		}
	}
	return id
}

// bindHosts mounts, read-only on /etc/hosts, a copy of the host's with a
// line for name. The copy lives on the seal's private /run.
func bindHosts(name string) error {
	host, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/run/airlock", 0o755); err != nil {
		return err
	}
	path := "/run/airlock/hosts"
	data := append(host, fmt.Appendf(nil, "\n# added by airlock for the seal's host name\n127.0.1.1\t%s\n", name)...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	if err := unix.Mount(path, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Mount("", "/etc/hosts", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("make /etc/hosts read-only: %w", err)
	}
	return nil
}
