package gateway

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/registration"
	"github.com/airlock-hpc/airlock/internal/runner"
	"github.com/airlock-hpc/airlock/internal/session"
)

// remoteStub is a backend.Remote that starts nothing: enough to build the
// spec a remote (Slurm-like) backend would be given.
type remoteStub struct{}

func (remoteStub) Name() string                                       { return "stub" }
func (remoteStub) Start(context.Context, backend.Job) (string, error) { return "", nil }
func (remoteStub) Watch(context.Context, string, string) (<-chan backend.Event, error) {
	return nil, nil
}
func (remoteStub) Stop(context.Context, string, string) error { return nil }
func (remoteStub) Register(context.Context, string, string, net.IP, registration.Registration) (backend.Event, error) {
	return backend.Event{}, nil
}
func (remoteStub) Runners(context.Context) (map[string]string, error) { return nil, nil }

var _ backend.Remote = remoteStub{}

// TestVMSpecContract: the spec the gateway writes for a vm session is one
// the runner accepts, for the local backend (scratch in the session's
// directory, where the monitor finds QEMU's socket) and for a remote one
// (TCP listener, the node's own scratch, accel decided on the node).
func TestVMSpecContract(t *testing.T) {
	p := Profile{Name: "vm", Kind: "vm", VM: &VMImage{Name: "tiny", Path: "/srv/tiny.qcow2", Format: "qcow2", OS: "linux",
		Firmware: "bios", RDP: true, Volumes: []VMVolume{{Path: "/srv/data", Tag: "data", ReadOnly: true}}}}
	s := &session.Session{ID: "s-0123456789ab", Owner: "alice", CPUs: 2, MemoryMB: 1024, Lifetime: time.Hour}
	for _, tc := range []struct {
		name    string
		be      backend.Backend
		scratch bool
		listen  string
	}{
		{"local", localStub{}, true, "unix:"},
		{"remote", remoteStub{}, false, "tcp::0"},
	} {
		g := &Gateway{cfg: Config{StateDir: t.TempDir(), Backend: tc.be}, master: make([]byte, 32)}
		g.remote, _ = tc.be.(backend.Remote)
		b, err := g.spec(s, p, LaunchRequest{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		spec, err := runner.ParseSpec(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: the runner refuses the gateway's spec: %v\n%s", tc.name, err, b)
		}
		v := spec.VM
		if v == nil || v.CPUs != 2 || v.MemoryMB != 1024 || v.Image != "/srv/tiny.qcow2" || !v.RDP || len(v.Volumes) != 1 || v.Share != nil {
			t.Errorf("%s: vm %+v", tc.name, v)
		}
		if (spec.ScratchDir != "") != tc.scratch {
			t.Errorf("%s: scratch_dir %q", tc.name, spec.ScratchDir)
		}
		if c := spec.Connectors; len(c) != 1 || c[0].Target != "unix:/tmp/vnc.sock" || c[0].Listen[:len(tc.listen)] != tc.listen {
			t.Errorf("%s: connectors %+v", tc.name, c)
		}
		if tc.name == "remote" && v.Accel != "auto" {
			t.Errorf("remote: accel %q, want auto (the node decides)", v.Accel)
		}
	}
}

// localStub is a plain backend named local.
type localStub struct{}

func (localStub) Name() string                                       { return "local" }
func (localStub) Start(context.Context, backend.Job) (string, error) { return "", nil }
func (localStub) Watch(context.Context, string, string) (<-chan backend.Event, error) {
	return nil, nil
}
func (localStub) Stop(context.Context, string, string) error { return nil }
