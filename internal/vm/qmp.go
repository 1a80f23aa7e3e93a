package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"strconv"
	"time"
)

// QMP is a connection to QEMU's machine protocol monitor (QMP): JSON
// objects, one command answered at a time, with asynchronous events in
// between that we skip. See QEMU's docs/interop/qmp-spec.
type QMP struct {
	c   net.Conn
	dec *json.Decoder
}

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// qmpMessage is any object QEMU sends: the greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
}

// maxQMPMessages bounds how many events may come before a reply; a stream
// of events with no reply is a broken monitor.
const maxQMPMessages = 1000

// maxQMPBytes bounds what one exchange may read.
const maxQMPBytes = 16 << 20

// DialQMP connects to the QMP socket at path, reads QEMU's greeting and
// leaves capabilities negotiation mode. ctx bounds the whole exchange.
//
// The socket's directory is the session's /tmp, where the workload (QEMU,
// and whoever took it over) may put anything, and the caller may be root:
// a symbolic link there must not lead the caller to another session's
// monitor, nor a FIFO hang it. So the last component is opened without
// following links, must be a socket, and is connected to by descriptor.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("qmp: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("qmp: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("qmp: %s is not a socket", path)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", path, err)
	}
	q := &QMP{c: c}
	q.dec = json.NewDecoder(io.LimitReader(c, maxQMPBytes))
	stop := q.deadline(ctx)
	defer stop()
	var greet qmpMessage
	if err := q.dec.Decode(&greet); err != nil || greet.QMP == nil {
		c.Close()
		if err == nil {
			err = errors.New("no greeting")
		}
		return nil, fmt.Errorf("qmp: %s: not a QMP monitor: %w", path, err)
	}
	if _, err := q.exec("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// deadline makes ctx's end interrupt reads and writes on the connection.
func (q *QMP) deadline(ctx context.Context) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		q.c.SetDeadline(dl)
	} else {
		q.c.SetDeadline(time.Time{})
	}
	cancel := context.AfterFunc(ctx, func() { q.c.SetDeadline(time.Now()) })
	return func() { cancel() }
}

// Execute runs a QMP command with args (nil for none) and returns its
// "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	stop := q.deadline(ctx)
	defer stop()
	return q.exec(command, args)
}

func (q *QMP) exec(command string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.c.Write(b); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	ret, err := readReply(q.dec)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	return ret, nil
}

// readReply reads messages until a reply, skipping events. A reply is an
// object with "return" (the result) or "error" (a *QMPError).
func readReply(dec *json.Decoder) (json.RawMessage, error) {
	for range maxQMPMessages {
		var m qmpMessage
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("read reply: %w", err)
		}
		switch {
		case m.Error != nil:
			return nil, m.Error
		case m.Return != nil:
			return m.Return, nil
		case m.Event != "":
			continue
		default:
			return nil, errors.New("read reply: neither a reply nor an event")
		}
	}
	return nil, fmt.Errorf("read reply: more than %d events and no reply", maxQMPMessages)
}

// Close closes the connection.
func (q *QMP) Close() error { return q.c.Close() }
