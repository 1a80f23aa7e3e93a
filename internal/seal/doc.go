// Package seal makes and runs the sealed unit a session lives in: new user
// (unless started as root), network, mount and PID namespaces, with only an
// up loopback interface, a private /tmp, /run and /dev/shm, a fresh devpts,
// and a PID-1 init that starts the workload and its connectors with no
// capabilities, reaps them, and takes everything with it when it ends.
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
// The parent writes the child's user and group maps (with newuidmap and
// newgidmap over the owner's subordinate ranges when it can, a single-id
// map otherwise), then sends the Plan. Init sets the namespaces up, drops
// every capability, starts the processes, waits until every probe address
// accepts, and says "ready". When the workload or a connector exits, or the
// parent says "stop", init signals everything in the PID namespace, waits up
// to the grace period, and exits; the kernel kills whatever remains when
// PID 1 of a PID namespace exits. Init gets SIGKILL if the parent dies
// (Pdeathsig), so a killed runner cannot leave a running seal behind.
//
// # Host UNIX sockets
//
// Pathname UNIX sockets are not per network namespace, and the seal still
// sees most of the host's file system. The workload and helpers are
// started from one locked thread that carries a seccomp filter with a
// user-notification listener (unixguard_filter.go) and cannot make UNIX
// datagram sockets; init's supervisor (unixguard.go) makes their connects
// itself, on copies of their sockets, and lets a pathname through only to
// a socket on the seal's private mounts or one listed in
// Config.UnixSockets. Connectors are started without the filter.
package seal
