package main

// The hardening modes: what a workload sees of its own privileges and what
// it can do to the processes that guard it.
//
//	probe privs OUT [SETUID-EXE]  its status, a grandchild's, every connector's,
//	                              and what SETUID-EXE ("ids" mode) says it ran as
//	probe status N                print /proc/self/status fields as JSON, from
//	                              N generations below the caller
//	probe ids                     print uid, euid and capability sets as JSON
//	probe attack OUT ADDR...      signal, ptrace, read /proc of and take fds from
//	                              init and every connector, write what worked,
//	                              then serve ADDR... (as "serve")
//	probe nsinfo OUT SHMID        hostname, the SysV shm segments it can see and
//	                              whether it can attach segment SHMID
//	probe nolandlock CMD ARG...   run CMD as on a kernel without Landlock: a
//	                              seccomp filter fails its system calls with
//	                              ENOSYS (sets no_new_privs)

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	for name, f := range map[string]func(args []string){
		"privs":      func(a []string) { privs(a[0], a[1:]) },
		"status":     func(a []string) { status(a[0]) },
		"ids":        func([]string) { ids() },
		"attack":     func(a []string) { attack(a[0], a[1:]) },
		"nsinfo":     func(a []string) { nsinfo(a[0], a[1]) },
		"nolandlock": noLandlock,
		"nouserns":   noUserNS,
	} {
		addMode(name, f)
	}
}

// statusFields are the lines of /proc/PID/status the privilege tests judge.
var statusFields = []string{"Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"}

func readStatus(pid string) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]string{"pid": pid}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, f := range statusFields {
			if k == f {
				out[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out, nil
}

func status(gen string) {
	n, err := strconv.Atoi(gen)
	must(err)
	if n > 0 {
		out, err := exec.Command("/proc/self/exe", "status", strconv.Itoa(n-1)).Output()
		must(err)
		os.Stdout.Write(out)
		return
	}
	st, err := readStatus("self")
	must(err)
	must(json.NewEncoder(os.Stdout).Encode(st))
}

func ids() {
	st, err := readStatus("self")
	must(err)
	st["euid"] = strconv.Itoa(os.Geteuid())
	st["ruid"] = strconv.Itoa(os.Getuid())
	must(json.NewEncoder(os.Stdout).Encode(st))
}

// connectorPids finds the seal's connectors ("airlock connector ...") in
// the seal's /proc, waiting up to timeout for at least one.
func connectorPids(timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			args := bytes.Split(b, []byte{0})
			if len(args) > 1 && string(args[1]) == "connector" {
				pids = append(pids, pid)
			}
		}
		if len(pids) > 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func privs(out string, args []string) {
	res := map[string]any{}
	self, err := readStatus("self")
	must(err)
	res["workload"] = self
	b, err := exec.Command("/proc/self/exe", "status", "2").Output()
	must(err)
	var gc map[string]string
	must(json.Unmarshal(b, &gc))
	res["grandchild"] = gc
	var conns []map[string]string
	for _, pid := range connectorPids(20 * time.Second) {
		st, err := readStatus(strconv.Itoa(pid))
		must(err)
		conns = append(conns, st)
	}
	res["connectors"] = conns
	if len(args) > 0 {
		b, err := exec.Command(args[0], "ids").Output()
		if err != nil {
			res["setuid_error"] = err.Error()
		} else {
			var m map[string]string
			must(json.Unmarshal(b, &m))
			res["setuid"] = m
		}
	}
	writeJSON(out, res)
}

// writeJSON writes v to path atomically: a test polling for the file never
// reads half of it.
func writeJSON(path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	must(err)
	must(os.WriteFile(path+".part", b, 0o644))
	must(os.Rename(path+".part", path))
}

// attackResult is what each attempt on one process did; an empty string
// means it worked.
type attackResult struct {
	Pid     int               `json:"pid"`
	Role    string            `json:"role"`
	Refused map[string]string `json:"refused"`
	Worked  []string          `json:"worked"`
}

func attack(out string, addrs []string) {
	crowdUnixGuard(64)
	var res []attackResult
	targets := map[int]string{1: "init"}
	for _, pid := range connectorPids(20 * time.Second) {
		targets[pid] = "connector"
	}
	for pid, role := range targets {
		r := attackResult{Pid: pid, Role: role, Refused: map[string]string{}}
		for _, a := range []struct {
			name string
			try  func(int) error
		}{
			{"kill-0", func(p int) error { return unix.Kill(p, 0) }},
			{"sigstop", func(p int) error {
				err := unix.Kill(p, unix.SIGSTOP)
				if err == nil {
					unix.Kill(p, unix.SIGCONT)
				}
				return err
			}},
			{"open-mem", func(p int) error { return openClose(fmt.Sprintf("/proc/%d/mem", p)) }},
			{"read-environ", func(p int) error {
				_, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
				return err
			}},
			{"list-fd", func(p int) error {
				_, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
				return err
			}},
			{"pidfd-getfd-3", pidfdGetfd},
			{"ptrace-seize", ptraceSeize},
		} {
			if err := a.try(pid); err != nil {
				r.Refused[a.name] = err.Error()
			} else {
				r.Worked = append(r.Worked, a.name)
			}
		}
		res = append(res, r)
	}
	writeJSON(out, res)
	serve(addrs)
}

// crowdUnixGuard makes init's unix guard start n threads at once (each
// takes the owner's ids and drops its capabilities): n connects that block
// on a listener whose backlog is full, each waiting on a guard thread of
// its own. None of those threads may be the one init is judged by.
func crowdUnixGuard(n int) {
	dir, err := os.MkdirTemp("", "crowd-")
	must(err)
	defer os.RemoveAll(dir)
	path := dir + "/s"
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(err)
	must(unix.Bind(ln, &unix.SockaddrUnix{Name: path}))
	must(unix.Listen(ln, 0))
	done := make(chan error, n+1)
	for range n + 1 { // one fills the backlog, n wait
		go func() {
			s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Connect(s, &unix.SockaddrUnix{Name: path})
				unix.Close(s)
			}
			done <- err
		}()
	}
	// Once they all wait in connect, the guard has had to start a thread
	// for each; they end (ECONNREFUSED) when the listener goes.
	for deadline := time.Now().Add(10 * time.Second); threadsInConnect() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	unix.Close(ln)
	for range n + 1 {
		<-done
	}
}

// threadsInConnect counts this process's threads blocked in connect(2).
func threadsInConnect() int {
	ents, _ := os.ReadDir("/proc/self/task")
	n := 0
	for _, e := range ents {
		b, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/syscall")
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == strconv.Itoa(unix.SYS_CONNECT) {
			n++
		}
	}
	return n
}

func openClose(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func pidfdGetfd(pid int) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pfd)
	fd, err := unix.PidfdGetfd(pfd, 3, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	unix.Close(fd)
	return nil
}

// ptraceSeize attaches without stopping the tracee and, if that worked,
// interrupts, waits for and detaches from it, so the session goes on.
func ptraceSeize(pid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("ptrace seize: %w", e)
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_INTERRUPT, uintptr(pid), 0, 0, 0, 0); e == 0 {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WALL, nil)
	}
	unix.PtraceDetach(pid)
	return nil
}

func nsinfo(out, shmID string) {
	res := map[string]string{}
	h, err := os.Hostname()
	must(err)
	res["hostname"] = h
	if addrs, err := net.LookupHost(h); err != nil {
		res["resolves"] = err.Error()
	} else {
		res["resolves"] = strings.Join(addrs, " ")
	}
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		res["sysvipc_shm_error"] = err.Error()
	}
	res["sysvipc_shm"] = string(b)
	id, err := strconv.Atoi(shmID)
	must(err)
	if addr, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY); err != nil {
		res["shmat"] = err.Error()
	} else {
		res["shmat"] = "attached"
		unix.SysvShmDetach(addr)
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		res["cgroup"] = string(b)
	}
	if _, err := os.Stat("/dev/mqueue"); !errors.Is(err, os.ErrNotExist) {
		mnt, _ := os.ReadFile("/proc/self/mountinfo")
		res["mqueue_mounted"] = strconv.FormatBool(bytes.Contains(mnt, []byte(" /dev/mqueue ")))
	}
	writeJSON(out, res)
}

func noLandlock(args []string) {
	path, err := exec.LookPath(args[0])
	must(err)
	// The filter is installed on this thread only; exec keeps only it.
	runtime.LockOSThread()
	must(unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	// The Landlock calls are 444-446 on every architecture.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_LANDLOCK_CREATE_RULESET, Jt: 3},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_LANDLOCK_ADD_RULE, Jt: 2},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_LANDLOCK_RESTRICT_SELF, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: enosys},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	must(unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0))
	must(syscall.Exec(path, args, os.Environ()))
}

// noUserNS runs args[1:] where no user namespace can be made, as a
// container runtime's default seccomp profile (or a sysctl) forbids them:
// clone and unshare with CLONE_NEWUSER fail with the errno args[0] names
// (EPERM as seccomp RuntimeDefault answers, ENOSPC as
// user.max_user_namespaces = 0 does, EINVAL), and clone3, whose flags a
// filter cannot read, with ENOSYS so the caller falls back to clone.
func noUserNS(args []string) {
	errno := map[string]unix.Errno{"EPERM": unix.EPERM, "ENOSPC": unix.ENOSPC, "EINVAL": unix.EINVAL}[args[0]]
	if errno == 0 {
		fmt.Fprintln(os.Stderr, "nouserns: want EPERM, ENOSPC or EINVAL")
		os.Exit(2)
	}
	path, err := exec.LookPath(args[1])
	must(err)
	runtime.LockOSThread()
	must(unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
	deny := uint32(unix.SECCOMP_RET_ERRNO | uint32(errno))
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_CLONE3, Jt: 7},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_CLONE, Jt: 2},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_UNSHARE, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16}, // low word of args[0]: the flags
		{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: unix.CLONE_NEWUSER, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: deny},
		{Code: unix.BPF_RET | unix.BPF_K, K: enosys},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	must(unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0))
	must(syscall.Exec(path, args[1:], os.Environ()))
}
