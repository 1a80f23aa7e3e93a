package seal

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// setupUnsealed prepares init for a session without namespaces (Plan.
// Unsealed, a pod where the cluster forbids user namespaces): there is no
// file system, network, IPC or host name of the seal's own to make. What
// it can still do it does: orphans of the session come back to init (a
// child subreaper), so a workload that double-forks and calls setsid is
// still found and ended with the session.
func (in *initProc) setupUnsealed() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become the session's subreaper: %w", err)
	}
	in.warn("no seal: the workload shares the pod's file system, /tmp, network namespace and process list with the runner and connectors")
	return nil
}

// signalAll sends sig to every process of the session. In a seal that is
// kill(-1) from PID 1 of its PID namespace; without one, kill(-1) would
// reach every process of the owner's on the node (the runner too), so
// it is each of init's descendants instead, found in /proc.
func (in *initProc) signalAll(sig unix.Signal) {
	if !in.plan.Unsealed {
		unix.Kill(-1, sig)
		return
	}
	for _, pid := range descendants(os.Getpid()) {
		unix.Kill(pid, sig)
	}
}

// descendants lists the processes below pid in /proc's parent links.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// parentOf reads pid's parent from /proc/PID/stat (field 4, after the
// command name in parentheses, which may itself hold spaces or ")").
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	return parseStatParent(b)
}

// parseStatParent reads the parent pid from the text of a /proc/PID/stat.
func parseStatParent(b []byte) (int, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(string(f[1]))
	return pp, err == nil
}
