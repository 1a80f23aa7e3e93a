package slurm

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// squeueFormat is what every poll asks squeue for, one job per line:
// id, state, reason, batch host, partition, priority, name, time limit.
// "|" cannot occur in any of these fields except the name, which is last
// but one and ours ("airlock-ID") for every job we care about; a foreign
// job's name with "|" in it only shifts that job's own trailing fields.
const squeueFormat = "%i|%T|%r|%B|%P|%Q|%j|%l"

// squeueFields is how many fields squeueFormat prints.
const squeueFields = 8

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

// parseSqueue reads squeue's output in squeueFormat. A malformed line is an
// error naming its number: a poll that misreads the queue must not end
// sessions.
func parseSqueue(out string) ([]job, error) {
	var jobs []job
	for n, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) < squeueFields {
			return nil, fmt.Errorf("squeue line %d: %d fields, want %d: %q", n+1, len(f), squeueFields, line)
		}
		if len(f) > squeueFields {
			// A job name with "|" in it: the name is everything between
			// the priority and the time limit.
			f = append(f[:6], strings.Join(f[6:len(f)-1], "|"), f[len(f)-1])
		}
		if !validJobID(f[0]) {
			return nil, fmt.Errorf("squeue line %d: job id %q", n+1, f[0])
		}
		prio, err := strconv.ParseInt(f[5], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("squeue line %d: priority %q", n+1, f[5])
		}
		node := f[3]
		if node == "n/a" || node == "(null)" {
			node = ""
		}
		jobs = append(jobs, job{ID: f[0], State: f[1], Reason: f[2], Node: node, Partition: f[4], Priority: prio, Name: f[6], TimeLimit: f[7]})
	}
	return jobs, nil
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
