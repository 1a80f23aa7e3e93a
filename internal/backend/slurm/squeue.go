package slurm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// squeueFormat is what every poll asks squeue for, one job per record:
// id, state, reason, batch host, partition, priority, name, time limit.
// "|" cannot occur in any of these fields except the name, which is last
// but one: a name is everything between the priority and the last "|".
const squeueFormat = "%i|%T|%r|%B|%P|%Q|%j|%l"

// squeueFields is how many fields squeueFormat prints.
const squeueFields = 8

// newMark is a fresh record mark for one squeue call. Slurm takes any byte
// in a job name, newlines included, and squeue prints names raw: any user
// could put whole forged lines (another user's job "COMPLETED", a job
// claiming a session's name) in the poll's output. Every record starts
// with a mark the job's owner cannot guess, so a newline in a name is only
// part of that name.
func newMark() string {
	var b [12]byte
	rand.Read(b[:])
	return "@" + hex.EncodeToString(b[:]) + "@"
}

// job is one line of squeue.
type job struct {
	ID        string
	State     string // PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
	Reason    string // why it is pending ("Resources", "Priority", "BeginTime") or "None"
	Node      string // the batch host once it runs; "n/a" or "" before
	Partition string
	Priority  int64
	Name      string
	TimeLimit string
}

// parseSqueue reads squeue's output in mark+squeueFormat (see newMark): a
// record starts only at a line that starts with mark. A malformed record
// is an error naming its number: a poll that misreads the queue must not
// end sessions.
func parseSqueue(out, mark string) ([]job, error) {
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if mark == "" || !strings.HasPrefix(out, mark) {
		return nil, fmt.Errorf("squeue: output does not start with the record mark: %q", truncate(out))
	}
	var jobs []job
	for n, rec := range strings.Split(strings.TrimSuffix(out[len(mark):], "\n"), "\n"+mark) {
		// The fixed fields before the name, the time limit after it.
		f := strings.SplitN(rec, "|", 7)
		i := strings.LastIndexByte(rec, '|')
		if len(f) < 7 || i < len(rec)-len(f[6]) {
			return nil, fmt.Errorf("squeue record %d: want %d fields: %q", n+1, squeueFields, truncate(rec))
		}
		name, limit := rec[len(rec)-len(f[6]):i], rec[i+1:]
		if !validJobID(f[0]) {
			return nil, fmt.Errorf("squeue record %d: job id %q", n+1, truncate(f[0]))
		}
		prio, err := strconv.ParseInt(f[5], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("squeue record %d: priority %q", n+1, truncate(f[5]))
		}
		node := f[3]
		if node == "n/a" || node == "(null)" {
			node = ""
		}
		jobs = append(jobs, job{ID: f[0], State: f[1], Reason: f[2], Node: node, Partition: f[4], Priority: prio, Name: name, TimeLimit: strings.TrimSpace(limit)})
	}
	return jobs, nil
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// validJobID accepts Slurm's job ids: digits, or digits_digits for an array
// task.
func validJobID(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i, c := range s {
		if (c < '0' || c > '9') && (c != '_' || i == 0) {
			return false
		}
	}
	return true
}

// queuePositions numbers the pending jobs of each partition in the order
// the scheduler will consider them: higher priority first, then the older
// (smaller) job id.
func queuePositions(jobs []job) (pos map[string]int, total map[string]int) {
	byPart := map[string][]job{}
	for _, j := range jobs {
		if j.State == "PENDING" {
			byPart[j.Partition] = append(byPart[j.Partition], j)
		}
	}
	pos, total = map[string]int{}, map[string]int{}
	for part, js := range byPart {
		sort.Slice(js, func(a, b int) bool {
			if js[a].Priority != js[b].Priority {
				return js[a].Priority > js[b].Priority
			}
			return lessJobID(js[a].ID, js[b].ID)
		})
		for i, j := range js {
			pos[j.ID] = i + 1
		}
		total[part] = len(js)
	}
	return pos, total
}

func lessJobID(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// endReason says in words why a job that is no longer running ended, from
// its final state. runner is what the runner itself reported, if anything.
func endReason(j job, runner string) string {
	var why string
	switch j.State {
	case "CANCELLED":
		why = "the job was cancelled in Slurm"
	case "TIMEOUT":
		why = "the job reached its time limit"
		if j.TimeLimit != "" {
			why += " of " + j.TimeLimit
		}
	case "NODE_FAIL":
		why = "the node failed"
		if j.Node != "" {
			why = "node " + j.Node + " failed"
		}
	case "PREEMPTED":
		why = "the job was preempted"
	case "OUT_OF_MEMORY":
		why = "the job ran out of memory"
	case "DEADLINE":
		why = "the job missed its deadline"
	case "BOOT_FAIL":
		why = "the node failed to boot"
	case "REVOKED":
		why = "the job was revoked (it ran on another cluster)"
	default:
		// COMPLETED, FAILED: the runner knows better than the scheduler.
		if runner != "" {
			return runner + " (Slurm job " + j.ID + ": " + j.State + ")"
		}
		why = "the job ended"
	}
	return why + " (Slurm job " + j.ID + ": " + j.State + ")"
}

// finished reports whether a job state is final (or on its way there).
func finished(state string) bool {
	switch state {
	case "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED":
		return false
	}
	return true
}
