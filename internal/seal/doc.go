// Package seal makes and runs the sealed unit a session lives in: new user
// (unless started as root), network, mount, PID, IPC, UTS and cgroup
// namespaces, with only an up loopback interface, a private /tmp, /run and
// /dev/shm, a fresh devpts and mqueue, a host name of its own, and a PID-1
// init that starts the workload and its connectors with no capabilities,
// reaps them, and takes everything with it when it ends.
//
// It is the mechanism only. What runs inside (the workload, the connectors'
// command lines, their secrets) is decided by the caller, normally the
// runner. The seal never imports anything from the gateway side.
//
// # Parent and init
//
// Start runs on the host side. It re-executes the airlock binary with the
// hidden role "seal-init" inside the new namespaces and hands it, as
// inherited descriptors:
//
//	fd 3  control socket (SOCK_STREAM): JSON lines, one Message each way
//	fd 4  egress socket (SOCK_SEQPACKET): one EgressRequest per connection,
//	      answered with an EgressReply that carries the dialled socket as
//	      SCM_RIGHTS
//	fd 5… the listeners, in Config.Listeners order
//
// An egress port is either a HOST:PORT the parent dials (Config.Egress) or
// a service of the parent's own (Config.EgressLocal, a kiosk's proxy):
// then the parent makes the connection itself, a socket pair, and nothing
// listens on the host for it. Config.Binds are host directories init
// mounts read-only over directories of the seal (a kiosk's browser
// policy over /etc/chromium), first, while their sources under the host's
// /run or /tmp are still in view; in a user namespace the kernel locks
// them, so the workload can neither unmount nor remount them writable.
// A Process marked Essential is a helper whose exit ends the session as
// the workload's does (a kiosk's browser).
//
// The parent writes the child's user and group maps (with newuidmap and
// newgidmap over the owner's subordinate ranges when it can, a single-id
// map otherwise), then sends the Plan. Init sets the namespaces up, starts
// the processes from its two spawner threads (below), waits until every
// probe address accepts, and says "ready". When the workload or a connector exits, or the
// parent says "stop", init signals everything in the PID namespace, waits up
// to the grace period, and exits; the kernel kills whatever remains when
// PID 1 of a PID namespace exits. Init gets SIGKILL if the parent dies
// (Pdeathsig), so a killed runner cannot leave a running seal behind.
// The processes' stdout and stderr are a pipe init drains into its own
// stderr, bounded (output.go): init's stderr is a file outside the seal.
//
// # Privileges: two spawner threads
//
// Capabilities, securebits, no_new_privs and Landlock domains are
// attributes of a thread, and a child inherits those of the thread that
// forked it; init is a Go program whose goroutines move between threads. So
// init never forks from an ordinary goroutine. It starts two spawners
// (spawner.go), each a goroutine locked for good to a thread of its own
// (never the main thread, whose credentials are what kill(2) and /proc
// judge init by), which sets that thread's credentials once and then does
// every ForkExec for its class of processes:
//
//   - the connector spawner: empty bounding, ambient and inheritable sets,
//     permitted and effective empty (as root: CAP_SETUID and CAP_SETGID
//     only, which the child's switch to the owner's uid clears), locked
//     SECBIT_NOROOT and friends, no_new_privs;
//   - the workload spawner (workload.go), for the workload and its helpers:
//     the same, then a Landlock domain, then any WorkloadThreadHook.
//
// Everything works with per-thread system calls, so a cgo build works too.
// Init's other threads keep what they had (full root in root mode;
// capabilities over the seal's own namespaces otherwise); no process is
// ever forked from them.
//
// # The workload against its connectors and init
//
// The workload runs as the same uid as its connectors and is their
// adversary: with ptrace or pidfd_getfd it could take a connector's
// listening socket, bound in the host's network namespace, and answer
// outside clients itself, with no ticket and no TLS. The workload's
// Landlock domain handles no file-system or network right (so it restricts
// no file and no connection) but is scoped (ABI 6, Linux 6.12) for signals
// and abstract UNIX sockets. A process in a domain cannot ptrace, open
// /proc/PID/{mem,environ,fd,…} of, or pidfd_getfd from a process outside
// it (every ABI), nor signal it or connect to its abstract sockets (the
// scopes). Init and the connectors are outside, the workload's own
// children inside. As a second line, and the only one on kernels without
// Landlock scoping, every connector makes itself non-dumpable first thing
// (ptrace and /proc then need CAP_SYS_PTRACE, which nothing inside has),
// init is non-dumpable, and init starts the workload only once every
// connector is. On a kernel below ABI 6 the workload can still signal its
// connectors (and, unprivileged, init); "ready" carries a warning saying
// so. On every kernel the workload can signal the one init thread that
// forks it (it is in the same domain; in root mode its uid differs), which
// at worst ends its own session, as exiting would.
//
// # Host UNIX sockets
//
// Pathname UNIX sockets are not per network namespace, and the seal still
// sees most of the host's file system. The workload spawner's thread also
// carries a seccomp filter with a user-notification listener
// (unixguard_filter.go, installed by a WorkloadThreadHook), so the workload
// and helpers cannot make UNIX datagram sockets and every connect of theirs
// goes to init's supervisor (unixguard.go), which makes it itself, on a
// copy of their socket, from a thread with the owner's ids and no
// capabilities, and lets a pathname through only to a socket on the seal's
// private mounts that listens in the seal's network namespace (one a host
// daemon made and the workload moved into the scratch directory by its host
// path does not; unixguard_diag.go), or one listed in Config.UnixSockets. Those connects are
// made from outside the workload's Landlock domain; the only processes
// outside it in the seal's network namespace, init and the connectors,
// bind no abstract socket, so the abstract-socket scope still holds.
// Connectors are started without the filter.
//
// # Without namespaces (Config.PodFallback)
//
// A runner in a Kubernetes pod may be forbidden user namespaces (clone
// answers EPERM, ENOSPC or EINVAL). With PodFallback, Start then runs init
// in no namespace of its own, in its own process group, and Unsealed says
// why. Init mounts nothing, brings no lo up and sets no host name; it
// becomes a child subreaper, starts everything with a parent-death signal,
// and ends the session by signalling its descendants (unsealed.go), since
// kill(-1) would reach every process of the owner's. Everything per thread
// stays: the spawners' no_new_privs and empty capability sets (a bounding
// set it cannot drop is a warning), the workload's Landlock domain and
// unix guard, undumpable init and connectors. Without PodFallback (every
// caller but a pod's runner) such a failure is Start's error.
package seal
