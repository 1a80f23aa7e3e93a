package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// BenchmarkDesktopRecording is issue 16's measure on a real desktop: Xvnc
// with an xterm that lists /usr without pause, viewed through the gateway
// and the vnc connector by an RFB client that requests whole screens back
// to back, so the screen is sent as fast as Xvnc encodes it: "zrle" asks
// for ZRLE (compressed rectangles, as a browser's viewer gets them), "raw"
// for raw pixels (4 MB a screen: the relay at line rate, and the
// recorder's compressor with real work). The profile's recording is off
// and on in one run; run the binary several times to alternate them.
// Reported: screens/s, MB/s of RFB data the viewer got, the gateway
// process's CPU per MB (the recorder's compressor included; Xvnc and the
// connector are other processes) and, recording on, the file's bytes per
// byte of RFB data. BenchmarkRelayRecording is the worst case beside it:
// incompressible bytes at loopback speed.
func BenchmarkDesktopRecording(b *testing.B) {
	busy := []string{"xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c", "while :; do ls -lR /usr; done"}
	bg := startBenchGateway(b, 0, func(c *Config) {
		plain := demoDesktopProfile()
		plain.Name, plain.Programs = "busy", [][]string{busy}
		rec := plain
		rec.Name, rec.Record = "busy-rec", true
		c.Profiles = append(c.Profiles, plain, rec)
	})
	for _, arm := range []struct{ name, profile string }{
		{"zrle/off", "busy"}, {"zrle/on", "busy-rec"}, {"raw/off", "busy"}, {"raw/on", "busy-rec"},
	} {
		b.Run(arm.name, func(b *testing.B) {
			id := bg.mustLaunch(arm.profile)
			defer bg.stop(id)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(bg.url, "https")+"/s/"+id+"/console/",
				&websocket.DialOptions{HTTPClient: tlsClient(1), CompressionMode: websocket.CompressionDisabled,
					HTTPHeader: http.Header{"Authorization": {"Bearer " + bg.token}}})
			if err != nil {
				b.Fatal(err)
			}
			ws.SetReadLimit(64 << 20)
			conn := &readCounter{Conn: websocket.NetConn(ctx, ws, websocket.MessageBinary)}
			defer conn.Close()
			rfb, err := realtest.NewRFB(conn)
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasPrefix(arm.name, "zrle/") {
				if err := rfb.AskZRLE(); err != nil {
					b.Fatal(err)
				}
			}
			for range 5 { // the xterm up, ZRLE in force
				if err := rfb.Update(false); err != nil {
					b.Fatal(err)
				}
			}
			n0, cpu0, t0 := conn.n, procCPU(os.Getpid()), time.Now()
			for b.Loop() {
				if err := rfb.Update(false); err != nil {
					b.Fatal(err)
				}
			}
			wall := time.Since(t0).Seconds()
			mb := float64(conn.n-n0) / 1e6
			b.ReportMetric(float64(b.N)/wall, "screens/s")
			b.ReportMetric(mb/wall, "rfb-MB/s")
			b.ReportMetric(float64((procCPU(os.Getpid())-cpu0).Nanoseconds())/mb, "gw-cpu-ns/MB")
			if arm.profile != "busy-rec" {
				return
			}
			// The file against the data: the sidecar is written when the
			// gateway's side of the relay ends.
			conn.Close()
			dir := filepath.Join(bg.g.recordingsDir(), id)
			var file int64
			if err := realtest.WaitFor(30*time.Second, func() error {
				side, _ := filepath.Glob(filepath.Join(dir, "*.json"))
				gz, _ := filepath.Glob(filepath.Join(dir, "*.fbs.gz"))
				if len(side) != 1 || len(gz) != 1 {
					return fmt.Errorf("%d sidecars, %d recordings", len(side), len(gz))
				}
				fi, err := os.Stat(gz[0])
				if err != nil {
					return err
				}
				file = fi.Size()
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(file)/float64(conn.n), "file-bytes/rfb-byte")
		})
	}
}

// readCounter counts the bytes read through it.
type readCounter struct {
	net.Conn
	n int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	return n, err
}
