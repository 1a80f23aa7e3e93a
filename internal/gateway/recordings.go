package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/portal"
	"github.com/airlock-hpc/airlock/internal/recording"
	"github.com/airlock-hpc/airlock/internal/session"
)

// Recordings: for a profile with Record, the gateway records the
// server's side of every viewer connection to its vnc console as it
// relays it (internal/recording: FBS in gzip, a JSON sidecar), in
// StateDir/recordings/SESSION/. The gateway's state directory is in every
// session's hide list, so nothing of it is visible from a seal, and the
// files are 0600 in 0700 directories of the gateway's account. Admins
// list and download them through the API; every download is audited.

// Recordings configures them (config key recordings).
type Recordings struct {
	// Dir is where recordings are kept; empty means StateDir/recordings.
	// Gateways sharing it (a shared filesystem) list and replay each
	// other's recordings. Every seal hides it.
	Dir string
	// Retention removes a recording this long after it ended. Zero means
	// 30 days.
	Retention time.Duration
	// MaxBytes ends one connection's recording at this much RFB data
	// with its framing (recording.Create), and the connection with it
	// (recording.ErrCapped); zero means 1 GiB.
	MaxBytes int64
	// SweepEvery is how often old recordings are looked for; zero means
	// a minute.
	SweepEvery time.Duration
}

var (
	recordingName = regexp.MustCompile(`^[0-9]{13}-[0-9a-f]{16}$`)
	recordingSess = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

func (g *Gateway) recordingsDir() string {
	if g.cfg.Recordings.Dir != "" {
		return g.cfg.Recordings.Dir
	}
	return filepath.Join(g.cfg.StateDir, "recordings")
}

// recordable reports whether viewer connections to connector conn of s
// are recorded: its profile says so and conn is a VNC screen.
func (g *Gateway) recordable(s *session.Session, conn string) bool {
	p, ok := g.profile(s.Profile)
	return ok && p.Record && connectorView(p, conn) == contract.ViewVNC
}

// startRecording opens a recording of one viewer connection to session
// sid, of kind (recording.KindVNC, recording.KindRDP).
func (g *Gateway) startRecording(sid, conn, user, kind string) (*recording.Writer, string, error) {
	if !recordingSess.MatchString(sid) {
		return nil, "", fmt.Errorf("session id %q cannot name a recording directory", sid)
	}
	dir := filepath.Join(g.recordingsDir(), sid)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("recording directory: %w", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("%013d-%s", g.now().UnixMilli(), hex.EncodeToString(rnd[:]))
	maxBytes := g.cfg.Recordings.MaxBytes
	if maxBytes == 0 {
		maxBytes = 1 << 30
	}
	w, err := recording.Create(filepath.Join(dir, name+".fbs.gz"), recording.Meta{Session: sid, User: user, Connector: conn, Kind: kind}, maxBytes, g.now)
	if err != nil {
		return nil, "", err
	}
	return w, name, nil
}

// tapRecording wraps the connector side of an upgraded connection to be
// recorded. It refuses (an error, so the viewer gets 502) when the
// recording cannot be made: a profile that must be recorded is not viewed
// unrecorded.
func (g *Gateway) tapRecording(resp *http.Response, s *session.Session, conn, user, remote string) error {
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		return errors.New("record: upgraded connection is not writable")
	}
	w, name, err := g.startRecording(s.ID, conn, user, recording.KindVNC)
	if err != nil {
		g.log.ErrorContext(g.ctx, "recording refused the viewer", "session", s.ID, "user", user, "error", err)
		return fmt.Errorf("record %s: %w", s.ID, err)
	}
	g.audit(g.ctx, user, "recording_started", s.ID, remote, name)
	tap := recording.NewTap(rwc, w)
	tap.OnClose = func(m recording.Meta, err error) {
		if err != nil {
			g.log.ErrorContext(g.ctx, "recording", "session", s.ID, "recording", name, "error", err)
		}
		g.log.InfoContext(g.ctx, "recording ended", "session", s.ID, "recording", name, "user", user, "rfb_bytes", m.RFBBytes, "file_bytes", m.FileBytes, "end", m.End)
	}
	resp.Body = tap
	return nil
}

// recordingInfo is one recording in the API: its sidecar with where it is.
type recordingInfo struct {
	Name string `json:"name"`
	recording.Meta
	// Complete is false for a recording without a sidecar (still being
	// written, or cut short by a crash).
	Complete bool `json:"complete"`
}

// listRecordings reads every sidecar, newest first.
func (g *Gateway) listRecordings() ([]recordingInfo, error) {
	var out []recordingInfo
	sessions, err := os.ReadDir(g.recordingsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, sd := range sessions {
		if !sd.IsDir() || !recordingSess.MatchString(sd.Name()) {
			continue
		}
		files, err := os.ReadDir(filepath.Join(g.recordingsDir(), sd.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			base, ok := strings.CutSuffix(f.Name(), ".fbs.gz")
			if !ok || !recordingName.MatchString(base) {
				continue
			}
			ri := recordingInfo{Name: base, Meta: recording.Meta{Session: sd.Name()}}
			if b, err := os.ReadFile(filepath.Join(g.recordingsDir(), sd.Name(), base+".json")); err == nil && json.Unmarshal(b, &ri.Meta) == nil {
				ri.Complete = true
				ri.Session = sd.Name() // the directory, not what a file says
			} else {
				if ms, err := strconv.ParseInt(base[:13], 10, 64); err == nil {
					ri.Started = time.UnixMilli(ms).UTC()
				}
				// No sidecar to say what it is: an RDP recording's
				// first block does.
				if h, ok := peekRDP(filepath.Join(g.recordingsDir(), sd.Name(), base+".fbs.gz")); ok {
					ri.Kind, ri.RDP = recording.KindRDP, &h
				}
			}
			if ri.Kind == "" {
				ri.Kind = recording.KindVNC // a sidecar from before RDP recordings
			}
			out = append(out, ri)
		}
	}
	slices.SortFunc(out, func(a, b recordingInfo) int { return strings.Compare(b.Name, a.Name) })
	return out, nil
}

// peekRDP reads the RDP header of the recording at path, if it is one.
func peekRDP(path string) (recording.RDPHeader, bool) {
	f, err := os.Open(path)
	if err != nil {
		return recording.RDPHeader{}, false
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return recording.RDPHeader{}, false
	}
	return recording.PeekRDP(zr)
}

// GET /api/v1/admin/recordings
func (g *Gateway) adminRecordings(w http.ResponseWriter, r *http.Request, id identity) error {
	list, err := g.listRecordings()
	if err != nil {
		g.log.ErrorContext(r.Context(), "list recordings", "error", err)
		return apiErr(503, "unavailable", "recordings cannot be listed now; try again")
	}
	if list == nil {
		list = []recordingInfo{}
	}
	writeJSON(w, 200, map[string]any{"recordings": list})
	return nil
}

// GET /api/v1/admin/recordings/{session}/{name}: the .fbs.gz file.
func (g *Gateway) adminRecording(w http.ResponseWriter, r *http.Request, id identity) error {
	sid, name := r.PathValue("session"), r.PathValue("name")
	if !recordingSess.MatchString(sid) || !recordingName.MatchString(name) {
		return apiErr(404, "no_recording", "no such recording")
	}
	f, err := os.Open(filepath.Join(g.recordingsDir(), sid, name+".fbs.gz"))
	if errors.Is(err, fs.ErrNotExist) {
		return apiErr(404, "no_recording", "no such recording")
	}
	if err != nil {
		g.log.ErrorContext(r.Context(), "open recording", "error", err)
		return apiErr(503, "unavailable", "the recording cannot be read now; try again")
	}
	defer f.Close()
	g.audit(r.Context(), id.user, "recording_fetched", sid, r.RemoteAddr, name)
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+sid+"-"+name+`.fbs.gz"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// GET /api/v1/admin/recordings/{session}/{name}/pointer: the viewer's
// pointer track, as JSON ({"events": [{ms, x, y, buttons}…]}).
func (g *Gateway) adminRecordingPointer(w http.ResponseWriter, r *http.Request, id identity) error {
	sid, name := r.PathValue("session"), r.PathValue("name")
	if !recordingSess.MatchString(sid) || !recordingName.MatchString(name) {
		return apiErr(404, "no_recording", "no such recording")
	}
	f, err := os.Open(filepath.Join(g.recordingsDir(), sid, name+".pointer"))
	if errors.Is(err, fs.ErrNotExist) {
		return apiErr(404, "no_recording", "no such recording, or one made before pointer tracks")
	}
	if err != nil {
		g.log.ErrorContext(r.Context(), "open pointer track", "error", err)
		return apiErr(503, "unavailable", "the recording cannot be read now; try again")
	}
	defer f.Close()
	// Streamed, one event at a time: a track may hold millions (any
	// viewer's, a view-only one's too), which as a slice and then one
	// JSON text cost the gateway hundreds of MB a request. What can fail
	// is seen before the first byte: the file's size, not its reading.
	fi, err := f.Stat()
	if err == nil && fi.Size() > recording.MaxPointerBytes {
		err = fmt.Errorf("%d bytes, more than a pointer track holds", fi.Size())
	}
	if err != nil {
		g.log.ErrorContext(r.Context(), "read pointer track", "session", sid, "recording", name, "error", err)
		return apiErr(503, "unavailable", "the recording cannot be read now; try again")
	}
	g.audit(r.Context(), id.user, "recording_fetched", sid, r.RemoteAddr, name+" pointer")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.WriteString(`{"events":[`)
	var b []byte
	first := true
	err = recording.EachPointer(f, func(e recording.PointerEvent) error {
		b = b[:0]
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"ms":`...)
		b = strconv.AppendUint(b, uint64(e.MS), 10)
		b = append(b, `,"x":`...)
		b = strconv.AppendUint(b, uint64(e.X), 10)
		b = append(b, `,"y":`...)
		b = strconv.AppendUint(b, uint64(e.Y), 10)
		b = append(b, `,"buttons":`...)
		b = strconv.AppendUint(b, uint64(e.Buttons), 10)
		b = append(b, '}')
		_, err := bw.Write(b)
		return err
	})
	if err != nil {
		// The answer has begun: it ends short, which no JSON reader
		// takes for a whole track.
		g.log.ErrorContext(r.Context(), "stream pointer track", "session", sid, "recording", name, "error", err)
		return nil
	}
	bw.WriteString("]}\n")
	bw.Flush()
	return nil
}

// recordingJanitor removes recordings older than the retention period.
func (g *Gateway) recordingJanitor() {
	defer g.wg.Done()
	every := g.cfg.Recordings.SweepEvery
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := g.sweepRecordings(); err != nil {
			g.log.ErrorContext(g.ctx, "sweep recordings", "error", err)
		}
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepRecordings removes every recording whose end (its sidecar's, or
// the file's last change for one without) is older than the retention,
// then empty session directories.
func (g *Gateway) sweepRecordings() error {
	keep := g.cfg.Recordings.Retention
	if keep <= 0 {
		keep = 30 * 24 * time.Hour
	}
	list, err := g.listRecordings()
	if err != nil {
		return err
	}
	cutoff := g.now().Add(-keep)
	var errs []error
	for _, ri := range list {
		base := filepath.Join(g.recordingsDir(), ri.Session, ri.Name)
		end := ri.Ended
		if !ri.Complete {
			fi, err := os.Stat(base + ".fbs.gz")
			if err != nil {
				continue
			}
			end = fi.ModTime()
		}
		if end.After(cutoff) {
			continue
		}
		for _, p := range []string{base + ".fbs.gz", base + ".pointer", base + ".json", base + ".json.tmp"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		g.log.InfoContext(g.ctx, "recording removed", "session", ri.Session, "recording", ri.Name, "ended", end)
		os.Remove(filepath.Dir(base)) // only when empty
	}
	return errors.Join(errs...)
}

// GET /admin/recordings: the recordings page.
func (g *Gateway) recordingsPage(w http.ResponseWriter, r *http.Request) error {
	id, err := g.identify(r)
	if err != nil {
		return err
	}
	if !id.admin {
		return apiErr(403, "not_admin", "admins only")
	}
	list, err := g.listRecordings()
	if err != nil {
		g.log.ErrorContext(r.Context(), "list recordings", "error", err)
		return apiErr(503, "unavailable", "recordings cannot be listed now; try again")
	}
	rows := make([]portal.RecordingRow, 0, len(list))
	for _, ri := range list {
		row := portal.RecordingRow{Session: ri.Session, Name: ri.Name, User: ri.User, Started: ri.Started,
			DurationMS: ri.DurationMS, FileBytes: ri.FileBytes, End: ri.End, Complete: ri.Complete, Kind: ri.Kind}
		if ri.RDP != nil {
			row.Channels = strings.Join(ri.RDP.Channels, ",")
		}
		rows = append(rows, row)
	}
	return g.cfg.Portal.Recordings(w, portal.RecordingsPage{Base: portal.Base{Title: "Recordings", User: id.user, Admin: true}, Recordings: rows})
}

// maxReplaySpeed bounds ?speed=.
const maxReplaySpeed = 8

// GET /api/v1/admin/recordings/{session}/{name}/replay?speed=N&from=MS: a
// WebSocket that plays the recording to an RFB client (noVNC, view only),
// or an RDP recording to an RDCleanPath client (IronRDP; rdprecord.go):
// the blocks before from at once, then each at its time divided by speed.
// What the client sends is read and thrown away. Audited.
func (g *Gateway) replayRecording(w http.ResponseWriter, r *http.Request, id identity) error {
	sid, name := r.PathValue("session"), r.PathValue("name")
	if !recordingSess.MatchString(sid) || !recordingName.MatchString(name) {
		return apiErr(404, "no_recording", "no such recording")
	}
	if !isWebSocket(r) {
		return apiErr(400, "bad_request", "a WebSocket upgrade is required")
	}
	// A WebSocket handshake is a GET that CORS does not guard: only the
	// gateway's own pages may open it with an admin's cookie.
	if !originIs(r, r.Host) {
		return apiErr(403, "cross_origin", "cross-origin WebSocket refused")
	}
	q := r.URL.Query()
	speed, err := strconv.Atoi(cmp.Or(q.Get("speed"), "1"))
	if err != nil || speed < 1 || speed > maxReplaySpeed {
		return apiErr(400, "bad_request", "speed: want 1 to 8")
	}
	from, err := strconv.ParseInt(cmp.Or(q.Get("from"), "0"), 10, 64)
	if err != nil || from < 0 {
		return apiErr(400, "bad_request", "from: want milliseconds, 0 or more")
	}
	f, err := os.Open(filepath.Join(g.recordingsDir(), sid, name+".fbs.gz"))
	if errors.Is(err, fs.ErrNotExist) {
		return apiErr(404, "no_recording", "no such recording")
	}
	if err != nil {
		g.log.ErrorContext(r.Context(), "open recording", "error", err)
		return apiErr(503, "unavailable", "the recording cannot be read now; try again")
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return apiErr(422, "bad_recording", "the recording is not gzip")
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}, InsecureSkipVerify: true,
		CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil // Accept has answered
	}
	g.audit(r.Context(), id.user, "recording_viewed", sid, r.RemoteAddr, name)
	// One block at a time: the session's workload decides how large its
	// recording grows, and a replay must not hold it all. The first is
	// kept: an RDP recording's header.
	rd, rerr := recording.NewReader(zr)
	var first *recording.Block
	if rerr == nil {
		b, err := rd.Next()
		switch {
		case err == nil:
			b.Data = bytes.Clone(b.Data)
			first = &b
		case err != io.EOF:
			rerr = err
		}
	}
	// An RDP recording says so in its first block, or (one that ended
	// before the server's first MCS PDU: no blocks) in its sidecar.
	var meta recording.Meta
	if b, err := os.ReadFile(filepath.Join(g.recordingsDir(), sid, name+".json")); err == nil {
		json.Unmarshal(b, &meta)
	}
	if meta.Kind == recording.KindRDP || first != nil && bytes.HasPrefix(first.Data, []byte(recording.RDPMagic)) {
		g.replayRDP(r.Context(), c, id, sid, name, r.RemoteAddr, first, rd, speed, from)
		return nil
	}
	// The client's messages (its handshake, update requests) mean
	// nothing to a replay: read and dropped, so that its close is seen.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		for {
			_, rd, err := c.Reader(ctx)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
		}
	}()
	if first != nil {
		var gone bool
		if gone, rerr = g.playBlocks(ctx, c, first, rd, speed, from); gone {
			return nil
		}
	}
	if rerr != nil {
		c.Close(websocket.StatusInternalError, "recording damaged")
		return nil
	}
	c.Close(websocket.StatusNormalClosure, "end of recording")
	return nil
}
