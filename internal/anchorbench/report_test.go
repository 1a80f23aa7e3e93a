package anchorbench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// What TestAnchorReport measures, sized so a whole run stays under ten
// minutes on two busy cores. Throughput and latency are taken in rounds;
// within a round each connector is measured right after or right before
// its anchor (the order flips every round), so a burst of load from
// elsewhere on a shared machine hits both alike, and a ratio is the
// median of the per-round ratios.
const (
	reportRounds   = 5
	reportThruDur  = time.Second
	reportEchoRTTs = 1000 // per round
)

var busyCounts = []int{1, 100, manyConns}

// figures are everything measured on one path.
type figures struct {
	spec *pathSpec
	info string // negotiated TLS, if any
	// down and up are bytes/s, p50 is µs, one per round; 0 where the
	// round failed. rtts pools every round's samples.
	down, up, p50 []float64
	rtts          []time.Duration
	busy          map[int]busyResult
	idle          *idleResult
	errs          []string
}

func (f *figures) fail(what string, err error) {
	f.errs = append(f.errs, fmt.Sprintf("%s: %v", what, err))
}

// TestAnchorReport measures every path once, side by side, and writes a
// markdown report with each figure as a ratio to its anchor and its floor,
// and whether the targets are met, to the test log and to
// .artifacts/bench-anchors.md. It runs only with AIRLOCK_BENCH_REPORT=1
// (scripts/bench-anchors.sh), since it takes minutes and needs websockify
// and stunnel4. It fails only if a path could not be measured; a missed
// target is a finding, reported, not a test failure.
func TestAnchorReport(t *testing.T) {
	if os.Getenv("AIRLOCK_BENCH_REPORT") != "1" {
		t.Skip("set AIRLOCK_BENCH_REPORT=1 (scripts/bench-anchors.sh) to measure connectors against websockify and stunnel")
	}
	for _, p := range paths {
		if why := p.missing(); why != "" {
			t.Skip(why)
		}
	}
	e := getEnv(t)
	began := time.Now()
	loadBefore := loadAverage()
	figs := make(map[string]*figures)
	for _, p := range paths {
		figs[p.name] = &figures{spec: p, busy: make(map[int]busyResult),
			down: make([]float64, reportRounds), up: make([]float64, reportRounds), p50: make([]float64, reportRounds)}
	}
	// with runs f on a fresh instance of p, so no measurement inherits
	// buffers, threads or children from another.
	with := func(p *pathSpec, what string, f func(in *instance) error) {
		fg := figs[p.name]
		in, err := launch(e, p)
		if err != nil {
			fg.fail(what, err)
			return
		}
		if err := f(in); err != nil {
			fg.fail(what, err)
		}
		if fg.info == "" {
			fg.info = in.info
		}
		if err := in.close(); err != nil {
			fg.fail(what, err)
		}
	}
	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}

	for round := range reportRounds {
		step("round %d/%d: download, upload, echo", round+1, reportRounds)
		order := slices.Clone(paths)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			with(p, "download", func(in *instance) error {
				c, err := dialReport(in)
				if err != nil {
					return err
				}
				defer c.Close()
				r, err := downloadFor(c, reportThruDur)
				if err == nil {
					figs[p.name].down[round] = r
				}
				return err
			})
		}
		for _, p := range order {
			with(p, "upload", func(in *instance) error {
				c, err := dialReport(in)
				if err != nil {
					return err
				}
				defer c.Close()
				r, err := uploadFor(c, reportThruDur)
				if err == nil {
					figs[p.name].up[round] = r
				}
				return err
			})
		}
		for _, p := range order {
			with(p, "echo", func(in *instance) error {
				ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
				defer cancel()
				c, err := openEcho(ctx, in.dial)
				if err != nil {
					return err
				}
				defer c.Close()
				rtts, err := echoSamples(c, reportEchoRTTs)
				if err == nil {
					figs[p.name].p50[round] = float64(percentile(slices.Clone(rtts), 50).Nanoseconds()) / 1e3
					figs[p.name].rtts = append(figs[p.name].rtts, rtts...)
				}
				return err
			})
		}
	}
	for _, n := range busyCounts {
		step("busy: %d connection(s), %v each", n, busyDuration)
		for _, p := range paths {
			with(p, fmt.Sprintf("busy %d", n), func(in *instance) error {
				r := busyFor(in.dial, n, busyDuration)
				figs[p.name].busy[n] = r
				if r.opened == 0 {
					return fmt.Errorf("%w: %s", errNoConns, r.fails)
				}
				return nil
			})
		}
	}
	step("idle: %d connections", manyConns)
	for _, p := range paths {
		with(p, "idle", func(in *instance) error {
			r, err := idleMany(in, manyConns)
			figs[p.name].idle = &r
			return err
		})
	}
	step("done")

	report := renderReport(figs, time.Since(began), loadBefore, loadAverage())
	t.Log("\n" + report)
	out := filepath.Join(moduleRoot(), ".artifacts", "bench-anchors.md")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s", out)
	for _, p := range paths {
		for _, msg := range figs[p.name].errs {
			t.Errorf("%s: %s", p.name, msg)
		}
	}
}

// dialReport dials one connection for a throughput figure.
func dialReport(in *instance) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return in.dial(ctx)
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// median returns the median of the positive values in xs (the upper one
// for an even count), or 0 if there are none: 0 marks a failed round.
func median(xs []float64) float64 {
	s := slices.DeleteFunc(slices.Clone(xs), func(x float64) bool { return x <= 0 })
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	return s[len(s)/2]
}

// metric is one figure of a path: value is what the figures table shows
// (0 when not measured) and rounds, for the figures taken in rounds, the
// value of each round.
type metric struct {
	value  func(*figures) float64
	rounds func(*figures) []float64
}

// ratio returns p's figure over a's: the median of the per-round ratios
// for a metric taken in rounds, else the plain ratio; 0 if either side
// was not measured.
func (m metric) ratio(p, a *figures) float64 {
	if m.rounds != nil {
		xs, ys := m.rounds(p), m.rounds(a)
		var rs []float64
		for i := range min(len(xs), len(ys)) {
			if xs[i] > 0 && ys[i] > 0 {
				rs = append(rs, xs[i]/ys[i])
			}
		}
		return median(rs)
	}
	x, y := m.value(p), m.value(a)
	if x <= 0 || y <= 0 {
		return 0
	}
	return x / y
}

// target is one of the goals, checked against the figures.
type target struct {
	path, anchor string // anchor "" means an absolute goal
	what         string
	want         string
	check        func(p, a *figures) (measured string, met bool, ok bool)
}

func atLeast(m metric, want float64) func(p, a *figures) (string, bool, bool) {
	return func(p, a *figures) (string, bool, bool) {
		r := m.ratio(p, a)
		if r == 0 {
			return "n/a", false, false
		}
		return fmt.Sprintf("%.2f×", r), r >= want, true
	}
}

func atMost(m metric, want float64) func(p, a *figures) (string, bool, bool) {
	return func(p, a *figures) (string, bool, bool) {
		r := m.ratio(p, a)
		if r == 0 {
			return "n/a", false, false
		}
		return fmt.Sprintf("%.2f×", r), r <= want, true
	}
}

// The metrics. Throughput is in MB/s, round trips in µs, memory in KiB.
var (
	mDown = metric{
		value:  func(f *figures) float64 { return median(f.down) / 1e6 },
		rounds: func(f *figures) []float64 { return f.down },
	}
	mUp = metric{
		value:  func(f *figures) float64 { return median(f.up) / 1e6 },
		rounds: func(f *figures) []float64 { return f.up },
	}
	// mP50 shows the median of all samples pooled; its ratio is the median
	// of the per-round ratios of each round's median.
	mP50 = metric{
		value:  func(f *figures) float64 { return float64(percentile(slices.Clone(f.rtts), 50).Nanoseconds()) / 1e3 },
		rounds: func(f *figures) []float64 { return f.p50 },
	}
	mP99 = metric{
		value: func(f *figures) float64 { return float64(percentile(slices.Clone(f.rtts), 99).Nanoseconds()) / 1e3 },
	}
	mOpened = metric{value: func(f *figures) float64 {
		if f.idle == nil {
			return 0
		}
		return float64(f.idle.opened)
	}}
	mRSSPerConn = metric{value: func(f *figures) float64 {
		if f.idle == nil {
			return 0
		}
		r, _ := f.idle.perConn()
		return r
	}}
	mPSSPerConn = metric{value: func(f *figures) float64 {
		if f.idle == nil {
			return 0
		}
		_, p := f.idle.perConn()
		return p
	}}
)

func mBusy(n int) metric {
	return metric{value: func(f *figures) float64 { return f.busy[n].perSec }}
}

func targets() []target {
	var ts []target
	for _, pair := range [][2]string{{vncPlainUnix, websockifyPlain}, {vncTLS, websockifyTLS}} {
		p, a := pair[0], pair[1]
		ts = append(ts,
			target{p, a, "download", "≥ 1.2×", atLeast(mDown, 1.2)},
			target{p, a, "upload", "≥ 3×", atLeast(mUp, 3)},
			target{p, a, "p50 round trip", "≤ 0.4×", atMost(mP50, 0.4)},
			target{p, a, "connections opened of 1,000", "all 1,000", func(pf, _ *figures) (string, bool, bool) {
				if pf.idle == nil {
					return "n/a", false, false
				}
				return fmt.Sprintf("%d (busy: %d)", pf.idle.opened, pf.busy[manyConns].opened),
					pf.idle.opened == manyConns && pf.busy[manyConns].opened == manyConns, true
			}},
			target{p, a, "echo msgs/s, 1,000 busy", "≥ 5×", atLeast(mBusy(manyConns), 5)},
		)
	}
	ts = append(ts,
		target{tlsConnector, stunnel, "download", "≥ 1.5×", atLeast(mDown, 1.5)},
		target{tlsConnector, stunnel, "p50 round trip", "≤ 0.6×", atMost(mP50, 0.6)},
	)
	for _, p := range []string{vncPlainUnix, vncTLS, tlsConnector} {
		ts = append(ts, target{p, "", "RSS per idle connection", "≤ 32 KiB", func(pf, _ *figures) (string, bool, bool) {
			if pf.idle == nil || pf.idle.opened == 0 {
				return "n/a", false, false
			}
			r := mRSSPerConn.value(pf)
			return fmt.Sprintf("%.1f KiB", r), r <= 32, true
		}})
	}
	return ts
}

// renderReport formats the figures as markdown.
func renderReport(figs map[string]*figures, took time.Duration, loadBefore, loadAfter string) string {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	num := func(x float64, prec int) string {
		if x == 0 {
			return "—"
		}
		return fmt.Sprintf("%.*f", prec, x)
	}
	spread := func(xs []float64) string {
		xs = slices.DeleteFunc(slices.Clone(xs), func(x float64) bool { return x <= 0 })
		if len(xs) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f (%.0f–%.0f)", median(xs)/1e6, slices.Min(xs)/1e6, slices.Max(xs)/1e6)
	}

	w("# airlock connectors against their anchors\n\n")
	w("%s, %s. %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(), fmt.Sprintf("Whole run %.0f s.", took.Seconds()))
	w("Caveats: one run on a shared, noisy machine (%d cores as the Go runtime sees them, load from other users). "+
		"The client and the sink run in the test process and share those cores with the proxy under test, "+
		"so absolute figures are low and move with the load; the ratios, whose two sides are measured back to back, "+
		"are the figures to read, and even they vary by a third or more between runs. Load average (1, 5, 15 min) before the run: %s; after: %s.\n\n", runtime.NumCPU(), loadBefore, loadAfter)
	w("Paths:\n\n")
	for _, p := range paths {
		info := figs[p.name].info
		if info == "" {
			info = "—"
		}
		w("- `%s`: %s. Negotiated: %s.\n", p.name, p.proxy, info)
	}
	w("\nThe plain vnc connector listens on a UNIX socket: `airlock connector` refuses a cleartext TCP listener (TLS on every hop). " +
		"websockify has no UNIX listener, so `websockify-plain` is over TCP; compare the TLS pair for like with like.\n\n")
	w("Method: download and upload move 64 KiB messages for %v per round, median of %d rounds (min–max), after %d MiB untimed; "+
		"upload counts only bytes the sink acknowledged. Round trips: 64-byte echoes, %d per round after 100 untimed, all rounds pooled. "+
		"Busy: 1, 100 and 1,000 connections opened at once (%v to open), then each does back-to-back 64-byte echoes for %v; "+
		"the figure is round trips per second of all connections together. Idle: 1,000 connections opened at once within %v, each proven by one echo; "+
		"memory is VmRSS (and Pss) summed over the proxy's whole process tree, with them open minus before, divided by those that opened. "+
		"Every measurement starts a fresh proxy.\n\n",
		reportThruDur, reportRounds, warmBytes>>20, reportEchoRTTs, openTimeout, busyDuration, openTimeout)

	w("## Figures\n\n")
	w("| path | down MB/s | up MB/s | RTT p50 µs | RTT p99 µs | msgs/s, 1 conn | msgs/s, 100 | msgs/s, 1,000 (opened) | opened of 1,000 idle | RSS KiB/idle conn | PSS KiB/idle conn | proxy RSS with idle conns |\n")
	w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range paths {
		f := figs[p.name]
		b1000 := "—"
		if r, ok := f.busy[manyConns]; ok {
			b1000 = fmt.Sprintf("%.0f (%d)", r.perSec, r.opened)
		}
		opened, rssC, pssC, total := "—", "—", "—", "—"
		if f.idle != nil {
			opened = fmt.Sprint(f.idle.opened)
			if p.floor != "" {
				rssC, pssC = num(mRSSPerConn.value(f), 1), num(mPSSPerConn.value(f), 1)
				total = fmt.Sprintf("%.1f MiB in %d process(es)", float64(f.idle.loaded.rss)/1024, f.idle.loaded.procs)
			}
		}
		w("| `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.name,
			spread(f.down), spread(f.up), num(mP50.value(f), 0), num(mP99.value(f), 0),
			num(mBusy(1).value(f), 0), num(mBusy(100).value(f), 0), b1000, opened, rssC, pssC, total)
	}

	w("\n## Ratios\n\n")
	w("Each path divided by its anchor (a connector by the program it replaces) and by its floor (direct TCP or direct TLS). " +
		"Above 1 is better for throughput and messages/s, below 1 is better for round trips and memory. " +
		"Down, up and p50 are the median of the per-round ratios (the two sides of a ratio are measured back to back in every round), " +
		"so they need not equal the quotient of the medians in the figures table.\n\n")
	w("| path | vs | down | up | p50 | p99 | msgs/s 1 | msgs/s 100 | msgs/s 1,000 | opened | RSS/conn |\n")
	w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	rx := func(m metric, p, a *figures) string {
		switch r := m.ratio(p, a); {
		case r == 0:
			return "—"
		case r < 0.1:
			return fmt.Sprintf("%.2g×", r) // websockify's memory is 1,000× ours
		default:
			return fmt.Sprintf("%.2f×", r)
		}
	}
	row := func(p, a *figures) {
		w("| `%s` | `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.spec.name, a.spec.name,
			rx(mDown, p, a), rx(mUp, p, a), rx(mP50, p, a), rx(mP99, p, a),
			rx(mBusy(1), p, a), rx(mBusy(100), p, a), rx(mBusy(manyConns), p, a), rx(mOpened, p, a),
			func() string {
				if a.spec.floor == "" {
					return "—"
				}
				return rx(mRSSPerConn, p, a)
			}())
	}
	for _, p := range paths {
		if p.anchor != "" {
			row(figs[p.name], figs[p.anchor])
		}
	}
	for _, p := range paths {
		if p.floor != "" {
			row(figs[p.name], figs[p.floor])
		}
	}

	w("\n## Targets\n\n")
	w("| path | vs | figure | wanted | measured | met |\n|---|---|---|---|---|---|\n")
	met, total := 0, 0
	for _, tg := range targets() {
		p := figs[tg.path]
		var a *figures
		vs := "absolute"
		if tg.anchor != "" {
			a = figs[tg.anchor]
			vs = "`" + tg.anchor + "`"
		}
		measured, ok, measurable := tg.check(p, a)
		mark := "no"
		switch {
		case !measurable:
			mark = "not measured"
		case ok:
			mark = "yes"
			met++
		}
		total++
		w("| `%s` | %s | %s | %s | %s | %s |\n", tg.path, vs, tg.what, tg.want, measured, mark)
	}
	w("\n%d of %d targets met.\n", met, total)

	var notes []string
	for _, p := range paths {
		f := figs[p.name]
		for n, r := range f.busy {
			if len(r.fails) > 0 || r.errored > 0 {
				notes = append(notes, fmt.Sprintf("`%s`, busy %d: %d not opened (%s), %d failed while echoing", p.name, n, n-r.opened, r.fails, r.errored))
			}
		}
		if f.idle != nil && len(f.idle.fails) > 0 {
			notes = append(notes, fmt.Sprintf("`%s`, idle: %d not opened (%s)", p.name, manyConns-f.idle.opened, f.idle.fails))
		}
		for _, e := range f.errs {
			notes = append(notes, fmt.Sprintf("`%s`: ERROR %s", p.name, e))
		}
	}
	if len(notes) > 0 {
		slices.Sort(notes)
		w("\n## Connections that did not open, and errors\n\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
	}
	return b.String()
}

// loadAverage returns the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], ", ")
}

// machine describes where the run happened.
func machine() string {
	var parts []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				parts = append(parts, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":")))
				break
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d CPUs", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "Linux "+strings.TrimSpace(string(b)))
	}
	parts = append(parts, runtime.Version())
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Package} ${Version}, ", "websockify", "stunnel4").Output(); err == nil {
		parts = append(parts, strings.TrimSuffix(strings.TrimSpace(string(out)), ","))
	}
	return strings.Join(parts, ", ")
}

// TestRenderReport checks the arithmetic of the report on made-up figures:
// ratios are medians of per-round ratios, failed rounds are left out, and
// each target is judged on the right side of its bound.
func TestRenderReport(t *testing.T) {
	figs := make(map[string]*figures)
	for _, p := range paths {
		figs[p.name] = &figures{spec: p, busy: make(map[int]busyResult),
			down: []float64{100e6, 100e6, 100e6}, up: []float64{100e6, 100e6, 100e6}, p50: []float64{100, 100, 100},
			idle: &idleResult{opened: manyConns, base: memory{rss: 1000}, loaded: memory{rss: 1000 + 20*manyConns}}}
		for _, n := range busyCounts {
			figs[p.name].busy[n] = busyResult{opened: n, perSec: 1000}
		}
	}
	v := figs[vncTLS]
	// Rounds 1 and 3 give 1.5× and 1.1×; round 2 failed for the anchor.
	figs[websockifyTLS].down = []float64{100e6, 0, 100e6}
	v.down = []float64{150e6, 900e6, 110e6}
	v.p50 = []float64{30, 50, 45}
	v.busy[manyConns] = busyResult{opened: manyConns, perSec: 4000}

	if got := mDown.ratio(v, figs[websockifyTLS]); got != 1.5 {
		t.Errorf("download ratio = %v, want 1.5 (median of 1.5 and 1.1, failed round left out)", got)
	}
	report := renderReport(figs, time.Minute, "1, 2, 3", "4, 5, 6")
	for _, want := range []string{
		"| `vnc-tls` | `websockify-tls` | download | ≥ 1.2× | 1.50× | yes |",
		"| `vnc-tls` | `websockify-tls` | upload | ≥ 3× | 1.00× | no |",
		"| `vnc-tls` | `websockify-tls` | p50 round trip | ≤ 0.4× | 0.45× | no |",
		"| `vnc-tls` | `websockify-tls` | echo msgs/s, 1,000 busy | ≥ 5× | 4.00× | no |",
		"| `vnc-tls` | absolute | RSS per idle connection | ≤ 32 KiB | 20.0 KiB | yes |",
		"| `vnc-tls` | `websockify-tls` | connections opened of 1,000 | all 1,000 | 1000 (busy: 1000) | yes |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q; report:\n%s", want, report)
		}
	}
}
