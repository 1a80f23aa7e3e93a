package seal

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nativeAuditArch is the seccomp arch of this build. Only native system
// calls get past the filter: a 32-bit (or x32) program would reach
// connect through system call numbers the filter does not check.
func nativeAuditArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	}
	return 0, fmt.Errorf("unix guard: no seccomp filter for %s", runtime.GOARCH)
}

// x32SyscallBit marks x32 system calls on amd64: same arch value, other
// numbers, so they are refused by number.
const x32SyscallBit = 0x40000000

// seccomp_data offsets.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// unixGuardFilter is the classic BPF program the workload runs under:
//
//   - a foreign arch kills the process; an x32 call fails with ENOSYS;
//   - io_uring_setup fails with EPERM (io_uring's own connect never passes
//     through seccomp);
//   - connect goes to the supervisor;
//   - socket and socketpair of AF_UNIX datagram sockets (SOCK_DGRAM, and
//     SOCK_RAW, which the kernel makes a datagram socket) fail with EACCES:
//     a datagram socket names its destination in every send, in memory the
//     workload may rewrite after any check. Without one, no send can name a
//     host socket (a stream socket refuses an address, a seqpacket socket
//     ignores it), so sendto, sendmsg and sendmmsg run untouched, by the
//     workload itself, at full speed and with its own credentials (unless
//     allowDatagram: see Config.UnixDatagram);
//   - socket(AF_VSOCK, …) fails with EAFNOSUPPORT: vsock reaches a virtual
//     machine's host whatever the network namespace;
//   - socket(AF_NETLINK, …, NETLINK_KOBJECT_UEVENT) fails with
//     EPROTONOSUPPORT: the kernel sends its device events to every network
//     namespace owned by the initial user namespace, which a root-mode
//     seal's is, so the workload would watch the host's devices come and
//     go (in an unprivileged seal it would get nothing anyway);
//   - everything else runs.
//
// Every decision is on a register, which the workload cannot change once
// the filter has looked at it.
func unixGuardFilter(allowDatagram bool) ([]unix.SockFilter, error) {
	arch, err := nativeAuditArch()
	if err != nil {
		return nil, err
	}
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		and = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	// A jump names its targets by label ("" = the next instruction).
	type insn struct {
		label  string // names this instruction as a jump target
		code   uint16
		k      uint32
		jt, jf string
	}
	// The low halves of args[0] and args[1] (little-endian): the family
	// and type are ints, and the kernel ignores the upper halves.
	arg0, arg1, arg2 := uint32(offArgs), uint32(offArgs+8), uint32(offArgs+16)
	prog := []insn{
		{code: ld, k: offArch},
		{code: jeq, k: arch, jf: "kill"},
		{code: ld, k: offNr},
	}
	if runtime.GOARCH == "amd64" {
		prog = append(prog, insn{code: jge, k: x32SyscallBit, jt: "enosys"})
	}
	prog = append(prog,
		insn{code: jeq, k: unix.SYS_CONNECT, jt: "notify"},
		insn{code: jeq, k: unix.SYS_IO_URING_SETUP, jt: "eperm"},
		insn{code: jeq, k: unix.SYS_SOCKET, jt: "socket"},
		insn{code: jeq, k: unix.SYS_SOCKETPAIR, jt: "socket", jf: "allow"},
		insn{label: "socket", code: ld, k: arg0},
		insn{code: jeq, k: unix.AF_VSOCK, jt: "eafnosupport"},
		insn{code: jeq, k: unix.AF_NETLINK, jt: "netlink"},
	)
	if !allowDatagram {
		prog = append(prog,
			insn{code: jeq, k: unix.AF_UNIX, jf: "allow"},
			insn{code: ld, k: arg1},
			insn{code: and, k: 0xf}, // SOCK_TYPE_MASK: without SOCK_CLOEXEC, SOCK_NONBLOCK
			insn{code: jeq, k: unix.SOCK_DGRAM, jt: "eacces"},
			insn{code: jeq, k: unix.SOCK_RAW, jt: "eacces"},
		)
	}
	prog = append(prog,
		insn{code: jeq, jt: "allow", jf: "allow"}, // every other socket runs
		insn{label: "netlink", code: ld, k: arg2},
		insn{code: jeq, k: unix.NETLINK_KOBJECT_UEVENT, jt: "eprotonosupport", jf: "allow"},
	)
	labels := map[string]int{}
	for i, in := range prog {
		if in.label != "" {
			labels[in.label] = i
		}
	}
	for _, l := range []struct {
		name string
		ret  uint32
	}{
		{"allow", unix.SECCOMP_RET_ALLOW},
		{"notify", unix.SECCOMP_RET_USER_NOTIF},
		{"eperm", unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{"enosys", unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"eafnosupport", unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		{"eprotonosupport", unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)},
		{"eacces", unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)},
		{"kill", unix.SECCOMP_RET_KILL_PROCESS},
	} {
		labels[l.name] = len(prog)
		prog = append(prog, insn{code: ret, k: l.ret})
	}
	out := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		out[i] = unix.SockFilter{Code: in.code, K: in.k}
		for _, j := range []struct {
			label string
			to    *uint8
		}{{in.jt, &out[i].Jt}, {in.jf, &out[i].Jf}} {
			if j.label == "" {
				continue
			}
			// Offsets count from the next instruction and fit in a byte.
			off := labels[j.label] - i - 1
			if off < 0 || off > 255 {
				return nil, fmt.Errorf("unix guard filter: jump %d to %s out of range", i, j.label)
			}
			*j.to = uint8(off)
		}
	}
	return out, nil
}

// installUnixGuard installs the filter on the calling thread only (no
// TSYNC): everything this thread forks from now on inherits it, and nothing
// else of init does. The caller must have locked the thread and must never
// unlock it. It returns the supervisor's notification descriptor.
func installUnixGuard(allowDatagram bool) (int, error) {
	filter, err := unixGuardFilter(allowDatagram)
	if err != nil {
		return -1, err
	}
	// Without CAP_SYS_ADMIN a filter needs no_new_privs, which is per
	// thread: set it on this one.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("unix guard: set no_new_privs: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// WAIT_KILLABLE_RECV (5.19): once the supervisor holds a notification,
	// only a fatal signal interrupts the call, so a connect the supervisor
	// already made is not made twice when the workload restarts the call.
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	for {
		fd, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(filter)
		if e == 0 {
			return int(fd), nil
		}
		if e == unix.EINVAL && flags&unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
			flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
			continue
		}
		return -1, fmt.Errorf("unix guard: install seccomp filter with a user-notification listener: %w", e)
	}
}
