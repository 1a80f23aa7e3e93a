package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/rdcleanpath"
	"github.com/airlock-hpc/airlock/internal/rdpfilter"
	"github.com/airlock-hpc/airlock/internal/recording"
)

// RDP recordings (issue 16): for a profile with Record, a browser RDP
// connection's server-to-client stream is recorded where the gateway holds
// it in the clear, between the server's TLS and the WebSocket, after the
// channel filter (what the client got). The recording begins at the
// server's MCS Connect Response: the X.224 exchange and TLS are not RDP
// data, and CredSSP, which comes before, is never recorded (the client's
// half of it carries the logon, and a replay could not redo it anyway).
// The Confirm and the server's certificate chain, which a replay needs to
// answer the client's RDCleanPath request, go in the recording's header
// block. Nothing the client sends is recorded: not its keys, not its
// Client Info PDU (which may carry a password).
//
// The native-client path (rdp.go) is not recorded: there the user's
// client and the RDP server run TLS end to end through the gateway, which
// relays ciphertext and has no plaintext to record.

// rdpRecorder records one browser RDP connection: it feeds the server's
// bytes to the channel filter and records what it passes from the MCS
// Connect Response on.
type rdpRecorder struct {
	g      *Gateway
	w      *recording.Writer
	name   string
	tag    viewerTag
	hdr    recording.RDPHeader
	f      *rdpfilter.Stream
	begun  bool
	closed bool
}

// startRDPRecording opens the recording of a browser RDP connection the
// gateway is about to answer with resp.
func (g *Gateway) startRDPRecording(tag viewerTag, resp *rdcleanpath.PDU, remote string) (*rdpRecorder, error) {
	hdr := recording.RDPHeader{Confirm: slices.Clone(resp.X224), Certificates: resp.ServerCertChain}
	// The session's RDP server chose its answer and its certificate
	// chain: one the header cannot hold would stop the recording at the
	// server's first MCS PDU while the connection went on unrecorded.
	if _, err := hdr.Marshal(); err != nil {
		err = fmt.Errorf("the RDP server's answer cannot be recorded: %w", err)
		g.log.ErrorContext(g.ctx, "recording refused the viewer", "session", tag.Session, "user", tag.User, "error", err)
		return nil, err
	}
	w, name, err := g.startRecording(tag.Session, ConnRDP, tag.User, recording.KindRDP)
	if err != nil {
		g.log.ErrorContext(g.ctx, "recording refused the viewer", "session", tag.Session, "user", tag.User, "error", err)
		return nil, err
	}
	g.audit(g.ctx, tag.User, "recording_started", tag.Session, remote, name)
	return &rdpRecorder{g: g, w: w, name: name, tag: tag, hdr: hdr}, nil
}

// feed is the server side's filter: FeedServer, recording what it passes
// once MCS began.
func (r *rdpRecorder) feed(in []byte) ([]byte, error) {
	out, at, err := r.f.FeedServerMCS(in)
	if err != nil || at < 0 {
		return out, err
	}
	if !r.begun {
		r.begun = true
		// The client's Connect Initial went by before the server's
		// answer (the filter refuses one without), and both feeds hold
		// the filter's lock: its channel list is complete and settled.
		r.hdr.Channels = slices.Clone(r.f.Channels)
		if err := r.w.BeginRDP(r.hdr); err != nil {
			// Not viewed unrecorded: the connection ends.
			r.g.log.ErrorContext(r.g.ctx, "recording", "session", r.tag.Session, "recording", r.name, "error", err)
			return nil, fmt.Errorf("recording: %w", err)
		}
	}
	if len(out) > at {
		r.w.Write(out[at:])
		if r.w.Capped() {
			// Nothing past the cap reaches the viewer unrecorded.
			return nil, recording.ErrCapped
		}
	}
	return out, nil
}

func (r *rdpRecorder) close() {
	if r.closed {
		return
	}
	r.closed = true
	m, err := r.w.Close()
	if err != nil {
		r.g.log.ErrorContext(r.g.ctx, "recording", "session", r.tag.Session, "recording", r.name, "error", err)
	}
	r.g.log.InfoContext(r.g.ctx, "recording ended", "session", r.tag.Session, "recording", r.name, "user", r.tag.User,
		"kind", recording.KindRDP, "rdp_bytes", m.RFBBytes, "file_bytes", m.FileBytes, "end", m.End)
}

// maxReplayDiscard bounds what a replay's client may send: IronRDP's
// answers to a replayed connection (its Connect Initial, Client Info,
// input) are a few kilobytes, and a client that sends more than this is
// not replaying.
const maxReplayDiscard = 16 << 20

// replayRDP plays an RDP recording to the browser's RDP client (IronRDP)
// on c, standing in for the gateway's RDCleanPath relay: it reads the
// client's RDCleanPath request, answers with the recorded Connection
// Confirm (TLS chosen, so that the client runs no CredSSP, which a
// recording cannot answer) and certificate chain, then sends the recorded
// server bytes paced as replayRecording paces RFB. What the client sends
// after its request is read and dropped.
func (g *Gateway) replayRDP(ctx context.Context, c *websocket.Conn, id identity, sid, name, remote string, first *recording.Block, rd *recording.Reader, speed int, from int64) {
	c.SetReadLimit(1 << 20)
	conn := websocket.NetConn(ctx, c, websocket.MessageBinary)
	defer conn.Close()
	refuse := func(why string, err error) {
		g.log.WarnContext(ctx, "recording replay (rdp): refused", "session", sid, "recording", name, "user", id.user,
			"remote_addr", remote, "reason", why, "error", err)
		if b, merr := rdcleanpath.HTTPError(400).Marshal(); merr == nil {
			conn.Write(b)
		}
	}
	var hdr recording.RDPHeader
	err := errors.New("rdp recording: no header block (the connection ended before the server's first MCS PDU)")
	if first != nil && rd != nil {
		hdr, err = recording.ParseRDPHeader(first.Data)
	}
	if err != nil {
		refuse("recording has no usable RDP header", err)
		return
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	raw, err := rdcleanpath.Read(conn, rdcleanpath.MaxRequest)
	if err != nil {
		refuse("unreadable RDCleanPath request", err)
		return
	}
	req, err := rdcleanpath.Parse(raw)
	if err == nil && req.Kind() != rdcleanpath.KindRequest {
		err = errors.New("RDCleanPath " + req.Kind().String() + " where a request belongs")
	}
	if err == nil {
		err = rdcleanpath.CheckRequest(req.X224)
	}
	if err != nil {
		refuse("bad RDCleanPath request", err)
		return
	}
	cc, err := rdcleanpath.SetProtocol(hdr.Confirm, rdcleanpath.ProtocolSSL)
	if err != nil {
		refuse("recorded Connection Confirm unusable", err)
		return
	}
	b, err := rdcleanpath.Response(rdpTarget, cc, hdr.Certificates).Marshal()
	if err == nil {
		_, err = conn.Write(b)
	}
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The client's RDP: dropped, but read, so that its close is seen,
		// and its Connect Initial checked against the recorded one's
		// channels (the recorded ids are for those).
		defer cancel()
		cw := &replayClientCheck{f: rdpfilter.New(rdpfilter.Policy{ClipIn: true, ClipOut: true, Drives: true}), want: hdr.Channels,
			warn: func(got []string) {
				g.log.WarnContext(ctx, "recording replay (rdp): the client asked for other channels than the recorded one; the replay may fail",
					"session", sid, "recording", name, "recorded", hdr.Channels, "replaying", got)
			}}
		n, err := io.Copy(cw, io.LimitReader(conn, maxReplayDiscard+1))
		if n > maxReplayDiscard {
			g.log.WarnContext(ctx, "recording replay (rdp): refused", "session", sid, "recording", name, "user", id.user,
				"remote_addr", remote, "reason", "the client sent more than a replay needs", "bytes", n)
		} else if err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
			g.log.DebugContext(ctx, "recording replay (rdp): client", "error", err)
		}
	}()
	// The recording's clock started before the security set-up (with a
	// logon form, the user's typing): the replay starts at its header,
	// the server's first MCS PDU.
	if _, rerr := g.playBlocks(ctx, c, nil, rd, speed, max(from, int64(first.MS))); rerr != nil {
		g.log.WarnContext(ctx, "recording replay (rdp): the recording is damaged", "session", sid, "recording", name, "error", rerr)
	}
}

// replayClientCheck drops a replaying client's bytes, once it has read
// its Connect Initial's channel list and compared it with want.
type replayClientCheck struct {
	f    *rdpfilter.Stream
	want []string
	warn func(got []string)
	done bool
}

func (c *replayClientCheck) Write(p []byte) (int, error) {
	if c.done {
		return len(p), nil
	}
	if _, err := c.f.Feed(p); err != nil {
		c.done = true // not the RDP it should be: nothing to compare
	} else if c.f.ConnectInitialSeen() {
		c.done = true
		if !slices.Equal(c.f.Channels, c.want) {
			c.warn(c.f.Channels)
		}
	}
	return len(p), nil
}

// playBlocks writes first (if not nil) and then rd's blocks to c as
// binary messages: those at or before from at once, then each at its time
// (after from) divided by speed. It returns gone when the client or ctx
// ended the replay, and the recording's read error (nil at its end).
func (g *Gateway) playBlocks(ctx context.Context, c *websocket.Conn, first *recording.Block, rd *recording.Reader, speed int, from int64) (gone bool, rerr error) {
	start := time.Now()
	for {
		var b recording.Block
		if first != nil {
			b, first = *first, nil
		} else {
			var err error
			if b, err = rd.Next(); err != nil {
				if err == io.EOF {
					return false, nil
				}
				return false, err
			}
		}
		if int64(b.MS) > from {
			at := start.Add(time.Duration(int64(b.MS)-from) * time.Millisecond / time.Duration(speed))
			select {
			case <-ctx.Done():
				return true, nil
			case <-time.After(time.Until(at)):
			}
		}
		if err := c.Write(ctx, websocket.MessageBinary, b.Data); err != nil {
			return true, nil
		}
	}
}
