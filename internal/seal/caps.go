package seal

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Securebits (linux/securebits.h). Locked bits can never change again, in
// this thread or anything it starts.
const (
	secbitNoroot                  = 1 << 0
	secbitNorootLocked            = 1 << 1
	secbitNoSetuidFixupLocked     = 1 << 3
	secbitKeepCapsLocked          = 1 << 5
	secbitNoCapAmbientRaise       = 1 << 6
	secbitNoCapAmbientRaiseLocked = 1 << 7
)

// confineThread gives the calling OS thread the credentials every process
// of the seal inherits from it: an empty bounding set, no ambient or
// inheritable capabilities, permitted and effective reduced to keep, and
// no_new_privs. All of it is per thread (capabilities, securebits and
// no_new_privs are attributes of a task, not of a process), so the caller
// must have locked its goroutine to the thread and never unlock it; see
// spawner.
//
// keep is empty unless init is real root and must switch its children to
// the owner's ids (CAP_SETUID, CAP_SETGID): the child's setuid to a
// non-zero uid then clears its permitted and effective sets (no
// SECBIT_KEEP_CAPS), and exec cannot give any back with an empty bounding
// set, no inheritable or ambient set and no_new_privs.
//
// unsealed (an unprivileged init in no user namespace of its own) has no
// CAP_SETPCAP to empty the bounding set with: what is left in it is a
// warning, not an error, since with no_new_privs and no capability in
// any other set no exec can gain one (a pod that drops ALL has an empty
// set anyway).
func confineThread(unsealed bool, keep ...uintptr) (warnings []string, err error) {
	// Locking "root is not special" and the fix-up on setuid is defence in
	// depth: with no_new_privs nothing inside can become uid 0 anyway.
	bits := secbitNoroot | secbitNorootLocked | secbitNoSetuidFixupLocked | secbitKeepCapsLocked |
		secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLocked
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, uintptr(bits), 0, 0, 0); err != nil {
		// A parent that locked other securebits (systemd's SecureBits=)
		// makes this fail; what follows does not depend on it.
		warnings = append(warnings, fmt.Sprintf("set securebits: %v", err))
	}
	kept := 0
	for c := 0; c <= lastCap(); c++ {
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err == nil && in == 0 {
			continue // not there: nothing to drop
		}
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		switch {
		case err == nil || err == unix.EINVAL:
		case err == unix.EPERM && unsealed:
			kept++
		default:
			return warnings, fmt.Errorf("drop bounding capability %d: %w", c, err)
		}
	}
	if kept > 0 {
		warnings = append(warnings, fmt.Sprintf("%d capabilities stay in the bounding set (no CAP_SETPCAP without a user namespace); with no_new_privs no program can gain them", kept))
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return warnings, fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for _, c := range keep {
		data[c/32].Permitted |= 1 << (c % 32)
		data[c/32].Effective |= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return warnings, fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return warnings, fmt.Errorf("set no_new_privs: %w", err)
	}
	return warnings, nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 63
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 63
	}
	return n
}
