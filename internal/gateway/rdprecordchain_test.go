package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
)

// TestRDPRecordingHostileServerChain: the RDP server is the session's own
// (a VM's Windows, a desktop's xrdp, whatever its user made of them), so
// it chooses the certificate chain the recording's header must hold. A
// chain longer than a recording can carry (17 certificates) must refuse
// the viewer (no recording, no view), not be admitted and then stop the
// recording ("unparseable") while the connection goes on unrecorded, as on
// main.
func TestRDPRecordingHostileServerChain(t *testing.T) {
	tg, lb := rdpRecGateway(t, filepath.Join(t.TempDir(), "typed"), contract.ClipboardBoth)
	cr := realtest.RDPConnectionRequest(3)
	ccTLS := []byte{0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x08, 0x00, 0x01, 0, 0, 0}
	cert := selfSigned(t)
	for range 16 {
		cert.Certificate = append(cert.Certificate, cert.Certificate[0])
	}
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		io.ReadFull(b, make([]byte, len(cr)))
		b.Write(ccTLS)
		tc := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
		tc.Handshake()
		io.Copy(io.Discard, tc)
	}()
	up, resp, ref := rdpServerHandshake(a, cr)
	if ref != nil {
		t.Fatalf("the server's handshake refused: %s: %v", ref.why, ref.err)
	}
	defer up.Close()
	if len(resp.ServerCertChain) != 17 {
		t.Fatalf("the server's chain has %d certificates, want the 17 it sent", len(resp.ServerCertChain))
	}
	const sid = "s-0123456789ab"
	rec, err := tg.g.startRDPRecording(viewerTag{Session: sid, User: "alice"}, resp, "192.0.2.1:1")
	if err == nil {
		rec.close()
		t.Fatal("a server chain no recording can hold was admitted to a recorded viewer")
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(lb.String(), "recording refused the viewer") {
		t.Errorf("the refusal is not logged:\n%s", lb.String())
	}
	// Nothing left behind that looks like a recording.
	if ents, _ := os.ReadDir(filepath.Join(tg.stateDir, "recordings", sid)); len(ents) != 0 {
		t.Errorf("files left for a refused recording: %v", ents)
	}
}
