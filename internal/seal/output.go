package seal

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// The seal's processes never get init's own stdout and stderr. Those are
// whatever the runner was given, normally a file outside the seal (the
// gateway's runner.log for the session), and a process holding a
// descriptor of a file can do more than append to it: ftruncate works on
// any descriptor open for writing (O_APPEND or not), which would erase
// init's record of what it refused, and nothing bounds how much it
// writes to a file system the gateway needs. So the processes write to a
// pipe (one for the workload and helpers, one for the connectors), and
// init copies what comes out of each to its stderr, up to
// maxProcessOutput bytes per session; the rest is dropped, with one line
// saying so.

// maxProcessOutput bounds what the workload and its helpers, and apart
// from them the connectors, may write to the runner's log in one session.
const maxProcessOutput = 64 << 20

// outputRelay is the pipe the seal's processes write to.
type outputRelay struct {
	w    *os.File // given to every process as its stdout and stderr
	done chan struct{}
}

func startOutputRelay(dst io.Writer, limit int64, log *slog.Logger) (*outputRelay, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	o := &outputRelay{w: w, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		defer r.Close()
		n, _ := io.Copy(dst, io.LimitReader(r, limit))
		if n < limit {
			return
		}
		log.Warn(fmt.Sprintf("the seal's processes wrote %d bytes of output: the rest of it is dropped", limit))
		io.Copy(io.Discard, r)
	}()
	return o, nil
}

// finish closes init's end of the pipe and waits until what the processes
// wrote has been copied: until every other end is closed, or timeout.
func (o *outputRelay) finish(timeout time.Duration) {
	if o == nil {
		return
	}
	o.w.Close()
	select {
	case <-o.done:
	case <-time.After(timeout):
	}
}
