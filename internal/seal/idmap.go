package seal

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// IDRange is one line of /etc/subuid or /etc/subgid.
type IDRange struct{ Start, Count int }

// ParseSubIDs returns the ranges in a subuid/subgid file that belong to the
// user named name or with numeric id id. Malformed lines are skipped, as
// shadow-utils does.
func ParseSubIDs(r io.Reader, name string, id int) []IDRange {
	var out []IDRange
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || start < 0 || count <= 0 || start > 1<<32-1-count {
			continue
		}
		out = append(out, IDRange{start, count})
	}
	return out
}

// idMapLine is "inside outside count".
type idMapLine struct{ Inside, Outside, Count int }

// SubordinateMap builds a map that keeps id as itself (so files inside show
// the owner's uid) and fills the ids around it from the subordinate range,
// as rootless containers do, so programs that need other ids (the tty
// group for xterm, smbd's setgroups) work.
func SubordinateMap(id int, r IDRange) []idMapLine {
	below := min(id, r.Count)
	m := []idMapLine{}
	if below > 0 {
		m = append(m, idMapLine{0, r.Start, below})
	}
	m = append(m, idMapLine{id, id, 1})
	if rest := r.Count - below; rest > 0 {
		m = append(m, idMapLine{id + 1, r.Start + below, rest})
	}
	return m
}

// IDMapMode says how the user namespace's ids were mapped.
type IDMapMode string

const (
	// MapNone: no user namespace (the runner is root).
	MapNone IDMapMode = "none"
	// MapSubordinate: the owner's id plus its /etc/subuid and /etc/subgid ranges.
	MapSubordinate IDMapMode = "subordinate"
	// MapSingle: only the owner's id; setgroups is denied. Some programs
	// (xterm, smbd) fail under it.
	MapSingle IDMapMode = "single"
	// MapPod: no user namespace, nor any other: the cluster forbids user
	// namespaces and the session relies on its pod (Config.PodFallback).
	MapPod IDMapMode = "pod"
)

// writeIDMaps maps the user namespace of pid. It returns the mode used and,
// for the single-id fallback, why the subordinate map was not possible.
func writeIDMaps(pid int, user string, uid, gid int) (IDMapMode, string, error) {
	why := subordinateUnavailable(user, uid, gid)
	if why == "" {
		uidR := ParseSubIDsFile("/etc/subuid", user, uid)
		gidR := ParseSubIDsFile("/etc/subgid", user, uid)
		if err := runIDMap("newuidmap", pid, SubordinateMap(uid, uidR[0])); err != nil {
			why = err.Error()
		} else if err := runIDMap("newgidmap", pid, SubordinateMap(gid, gidR[0])); err != nil {
			// uid_map is already written and cannot be rewritten: give up.
			return "", "", err
		} else {
			return MapSubordinate, "", nil
		}
	}
	p := "/proc/" + strconv.Itoa(pid)
	if err := os.WriteFile(p+"/uid_map", fmt.Appendf(nil, "%d %d 1\n", uid, uid), 0); err != nil {
		return "", "", fmt.Errorf("write uid_map of %d: %w", pid, err)
	}
	// An unprivileged writer may map its gid only after giving up setgroups
	// (user_namespaces(7)), or it could drop groups used to deny access.
	if err := os.WriteFile(p+"/setgroups", []byte("deny"), 0); err != nil {
		return "", "", fmt.Errorf("write setgroups of %d: %w", pid, err)
	}
	if err := os.WriteFile(p+"/gid_map", fmt.Appendf(nil, "%d %d 1\n", gid, gid), 0); err != nil {
		return "", "", fmt.Errorf("write gid_map of %d: %w", pid, err)
	}
	return MapSingle, why, nil
}

// ParseSubIDsFile reads path with ParseSubIDs; a missing file has no ranges.
func ParseSubIDsFile(path, name string, id int) []IDRange {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return ParseSubIDs(bytes.NewReader(b), name, id)
}

func subordinateUnavailable(user string, uid, gid int) string {
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (Debian package uidmap)"
		}
	}
	if len(ParseSubIDsFile("/etc/subuid", user, uid)) == 0 {
		return "no /etc/subuid range for " + user
	}
	if len(ParseSubIDsFile("/etc/subgid", user, uid)) == 0 {
		return "no /etc/subgid range for " + user
	}
	return ""
}

func runIDMap(tool string, pid int, m []idMapLine) error {
	args := []string{strconv.Itoa(pid)}
	for _, l := range m {
		args = append(args, strconv.Itoa(l.Inside), strconv.Itoa(l.Outside), strconv.Itoa(l.Count))
	}
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %s: %w", tool, strings.Join(args, " "), bytes.TrimSpace(out), err)
	}
	return nil
}

// mappedInside reports whether inside id is covered by a subordinate map for
// owner id, i.e. whether a group like tty exists inside.
func mappedInside(inside, owner int, r IDRange) bool {
	for _, l := range SubordinateMap(owner, r) {
		if inside >= l.Inside && inside < l.Inside+l.Count {
			return true
		}
	}
	return false
}
