package seal

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// landlockRulesetAttr is struct landlock_ruleset_attr up to "scoped" (ABI
// 6). The kernel accepts a shorter or longer struct as long as what it does
// not know is zero, so this size works on every ABI.
type landlockRulesetAttr struct {
	handledAccessFS  uint64
	handledAccessNet uint64
	scoped           uint64
}

// landlockABI is the kernel's Landlock ABI version, 0 when it has none
// (not built, or not enabled with lsm=).
func landlockABI() int {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		return 0
	}
	return int(v)
}

// landlockScopeABI is the first ABI with scoped signals and abstract UNIX
// sockets (Linux 6.12).
const landlockScopeABI = 6

// scopeThread puts the calling thread, and so every process it starts
// from now on, in a new Landlock domain that handles no file or network
// access (so it restricts neither) but is scoped: from inside the domain,
// no process outside it can be signalled or reached through an abstract
// UNIX socket. Ptrace, /proc/PID/{mem,environ,fd,…} and pidfd_getfd on a
// process outside the domain are denied by every domain, whatever it
// handles. The thread must have no_new_privs set. It returns
// errScopeUnsupported when the kernel's ABI is below 6.
//
// A domain that handled a file-system right would, on every ABI, refuse
// rename and link across directories unless it also handled and granted
// LANDLOCK_ACCESS_FS_REFER, so this one handles none.
func scopeThread(abi int) error {
	if abi < landlockScopeABI {
		return errScopeUnsupported
	}
	attr := landlockRulesetAttr{scoped: unix.LANDLOCK_SCOPE_SIGNAL | unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET}
	fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if e != 0 {
		return fmt.Errorf("landlock_create_ruleset: %w", e)
	}
	defer unix.Close(int(fd))
	if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); e != 0 {
		return fmt.Errorf("landlock_restrict_self: %w", e)
	}
	return nil
}

var errScopeUnsupported = fmt.Errorf("kernel Landlock ABI below %d: no signal or abstract-socket scoping", landlockScopeABI)
