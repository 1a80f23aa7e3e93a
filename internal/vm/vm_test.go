package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func linuxMachine() Machine {
	return Machine{
		Name: "airlock-s-1", Accel: "tcg", CPUs: 2, MemoryMB: 512, OS: "linux",
		Disk: "/tmp/disk.qcow2", VNC: "unix:/tmp/vnc.sock", Serial: "/tmp/serial.log", QMP: "/tmp/qmp.sock",
		Kernel: "/srv/vmlinuz", Initrd: "/srv/initrd.gz", Append: "console=ttyS0 quiet",
		RDP:     true,
		Share:   &Share{Path: "/home/alice", Tag: "home"},
		Volumes: []Share{{Path: "/data/a,b", Tag: "data", ReadOnly: true}},
	}
}

// TestArgsGolden pins whole command lines: a change to any flag shows in
// the diff of testdata/*.argv (rewrite with -update).
func TestArgsGolden(t *testing.T) {
	win := Machine{Name: "win", Accel: "kvm", CPUs: 4, MemoryMB: 8192, OS: "windows", Disk: "/tmp/disk.qcow2",
		VNC: "127.0.0.1:5900", Serial: "/tmp/serial.log", QMP: "/tmp/qmp.sock", RDP: true,
		Firmware: Firmware{Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: "/tmp/OVMF_VARS.fd"},
		Share:    &Share{Path: "/home/bob", Tag: "home"}, GPUs: []string{"0000:01:00.0"}}
	iso := Machine{Name: "live", Accel: "tcg", CPUs: 1, MemoryMB: 1024, OS: "other", CDROM: "/srv/live.iso",
		VNC: "unix:/tmp/vnc.sock", Serial: "/tmp/serial.log", QMP: "/tmp/qmp.sock"}
	for name, m := range map[string]Machine{"linux": linuxMachine(), "windows": win, "iso": iso} {
		t.Run(name, func(t *testing.T) {
			a, err := Args(m)
			if err != nil {
				t.Fatal(err)
			}
			got := []byte(strings.Join(a, "\n") + "\n")
			file := filepath.Join("testdata", name+".argv")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestArgsIsolation checks the properties the seal relies on, whatever
// else changes in the command line.
func TestArgsIsolation(t *testing.T) {
	a, err := Args(linuxMachine())
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(a, " ")
	for _, want := range []string{
		"-nodefaults",
		"-nic user,restrict=on,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:3389-:3389",
		"-device virtio-balloon-pci",
		"-vnc unix:/tmp/vnc.sock",
		"-virtfs local,path=/data/a,,b,mount_tag=data,security_model=none,readonly=on",
		"-machine pc,accel=tcg",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("argv lacks %q:\n%s", want, line)
		}
	}
	if strings.Count(line, "-nic ") != 1 || strings.Contains(line, "-netdev") {
		t.Errorf("more than the one restricted NIC:\n%s", line)
	}
	m := linuxMachine()
	m.RDP = false
	a, _ = Args(m)
	if strings.Contains(strings.Join(a, " "), "hostfwd") {
		t.Error("a forward without rdp")
	}
}

func TestArgsRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Machine)
		want string
	}{
		"accel":         {func(m *Machine) { m.Accel = "hvf" }, "accel"},
		"cpus":          {func(m *Machine) { m.CPUs = 0 }, "cpus"},
		"memory":        {func(m *Machine) { m.MemoryMB = 8 }, "memory"},
		"os":            {func(m *Machine) { m.OS = "beos" }, "os"},
		"no boot":       {func(m *Machine) { m.Disk, m.Kernel, m.Initrd, m.Append = "", "", "", "" }, "nothing to boot"},
		"initrd alone":  {func(m *Machine) { m.Kernel = "" }, "need a kernel"},
		"vnc public":    {func(m *Machine) { m.VNC = "0.0.0.0:5900" }, "vnc"},
		"tag":           {func(m *Machine) { m.Share.Tag = "a b" }, "tag"},
		"dup tag":       {func(m *Machine) { m.Volumes[0].Tag = "home" }, "twice"},
		"relative":      {func(m *Machine) { m.Volumes[0].Path = "data" }, "absolute"},
		"gpu":           {func(m *Machine) { m.GPUs = []string{"01:00.0,x=1"} }, "PCI address"},
		"uefi half":     {func(m *Machine) { m.Firmware.Code = "/x" }, "both"},
		"win read-only": {func(m *Machine) { m.OS = "windows"; m.Volumes = nil; m.Share.ReadOnly = true }, "read-only"},
		"win volumes":   {func(m *Machine) { m.OS = "windows" }, "extra volumes"},
	} {
		m := linuxMachine()
		m.Share = &Share{Path: "/home/alice", Tag: "home"}
		m.Volumes = []Share{{Path: "/data", Tag: "data"}}
		tc.edit(&m)
		if _, err := Args(m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", name, err, tc.want)
		}
	}
}

func TestKVMUsable(t *testing.T) {
	if kvmUsable(filepath.Join(t.TempDir(), "kvm"), os.Geteuid(), nil) {
		t.Error("a missing device is usable")
	}
	f := filepath.Join(t.TempDir(), "regular")
	os.WriteFile(f, nil, 0o666)
	if kvmUsable(f, os.Geteuid(), nil) {
		t.Error("a regular file is usable as /dev/kvm")
	}
	// /dev/null is a character device everyone may open.
	if !kvmUsable("/dev/null", os.Geteuid(), nil) || !kvmUsable("/dev/null", 12345, nil) {
		t.Error("/dev/null (rw for all) is not usable")
	}
	if os.Geteuid() != 0 {
		return
	}
	// As root, a device like Debian's /dev/kvm (root:kvm 0660): usable by a
	// member of its group, not by anyone else, though root can open it.
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o660, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	os.Chown(dev, 0, 4242)
	os.Chmod(dev, 0o660) // mknod applies the umask
	if !kvmUsable(dev, 1000, []int{100, 4242}) {
		t.Error("a member of the device's group cannot use it")
	}
	if kvmUsable(dev, 1000, []int{100}) {
		t.Error("someone outside the device's group can use it")
	}
}

var infoCases = []struct {
	name, in string
	want     *Info
	err      string
}{
	{"qcow2 overlay", `{"virtual-size": 16777216, "filename": "/tmp/y.qcow2", "cluster-size": 65536, "format": "qcow2",
	  "actual-size": 200704, "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": false}},
	  "full-backing-filename": "/tmp/x.qcow2", "backing-filename": "/tmp/x.qcow2", "backing-filename-format": "qcow2", "dirty-flag": false}`,
		&Info{Format: "qcow2", VirtualSize: 16777216, ActualSize: 200704, BackingFile: "/tmp/x.qcow2", BackingFormat: "qcow2"}, ""},
	{"raw", `{"virtual-size": 1048576, "filename": "/tmp/z.raw", "format": "raw", "actual-size": 0, "dirty-flag": false}`,
		&Info{Format: "raw", VirtualSize: 1048576}, ""},
	{"corrupt", `{"virtual-size": 1, "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"corrupt": true}}}`,
		&Info{Format: "qcow2", VirtualSize: 1, Corrupt: true}, ""},
	{"no format", `{"virtual-size": 1}`, nil, "no format"},
	{"negative", `{"virtual-size": -1, "format": "raw"}`, nil, "negative"},
	{"two values", `{"format": "raw"} {"format": "raw"}`, nil, "more than one"},
	{"not json", `qemu-img: Could not open`, nil, "bad JSON"},
	{"wrong type", `{"format": 7}`, nil, "bad JSON"},
	{"empty", ``, nil, "bad JSON"},
}

func TestParseInfo(t *testing.T) {
	for _, tc := range infoCases {
		got, err := ParseInfo([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %v, %v; want error %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || *got != *tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// FuzzParseInfo checks that ParseInfo never panics, that what it accepts
// has a format and sizes that are not negative, and that an accepted
// value re-encoded and parsed again gives the same Info.
func FuzzParseInfo(f *testing.F) {
	for _, tc := range infoCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ParseInfo(data)
		if err != nil {
			return
		}
		if in.Format == "" || in.VirtualSize < 0 || in.ActualSize < 0 {
			t.Fatalf("accepted %+v", in)
		}
		m := map[string]any{"format": in.Format, "virtual-size": in.VirtualSize, "actual-size": in.ActualSize,
			"backing-filename": in.BackingFile, "backing-filename-format": in.BackingFormat,
			"format-specific": map[string]any{"type": "qcow2", "data": map[string]any{"corrupt": in.Corrupt}}}
		b, _ := json.Marshal(m)
		again, err := ParseInfo(b)
		if err != nil {
			t.Fatalf("re-encoded %s: %v", b, err)
		}
		if in.Format != "qcow2" {
			again.Corrupt = in.Corrupt
		}
		if *again != *in {
			t.Fatalf("round trip: %+v != %+v", again, in)
		}
	})
}

var replyCases = []string{
	`{"return": {}}`,
	`{"event": "RESET", "data": {}} {"return": {"status": "running"}}`,
	`{"error": {"class": "GenericError", "desc": "no"}}`,
	`{"event": "X"}`,
	`{}`,
	`[1]`,
	`{"return": null}`,
}

// FuzzQMPReply checks that reading a reply never panics and ends with a
// value or an error, never both or neither.
func FuzzQMPReply(f *testing.F) {
	for _, c := range replyCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ret, err := readReply(json.NewDecoder(bytes.NewReader(data)))
		if (ret == nil) == (err == nil) {
			t.Fatalf("got %q and %v", ret, err)
		}
	})
}

func TestReadReply(t *testing.T) {
	ret, err := readReply(json.NewDecoder(strings.NewReader(replyCases[1])))
	if err != nil || string(ret) != `{"status": "running"}` {
		t.Errorf("after an event: %s, %v", ret, err)
	}
	_, err = readReply(json.NewDecoder(strings.NewReader(replyCases[2])))
	if qe, ok := errors.AsType[*QMPError](err); !ok || qe.Desc != "no" {
		t.Errorf("error reply: %v", err)
	}
}

func needQEMUImg(t testing.TB) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (Debian: qemu-utils)")
	}
}

// TestCheck runs the real qemu-img on good, mislabelled, corrupt and
// missing images.
func TestCheck(t *testing.T) {
	needQEMUImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, []byte("BASE"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(raw, 1<<20)
	q := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q)
	broken := filepath.Join(dir, "broken.qcow2")
	b, _ := os.ReadFile(q)
	os.WriteFile(broken, b[:100], 0o644) // a qcow2 header, cut short
	iso := filepath.Join(dir, "fake.iso")
	os.WriteFile(iso, make([]byte, 40000), 0o644)

	var tools Tools
	if in, err := tools.Check(ctx, q, "qcow2"); err != nil || in.VirtualSize != 1<<20 {
		t.Errorf("qcow2: %+v %v", in, err)
	}
	if _, err := tools.Check(ctx, raw, "raw"); err != nil {
		t.Errorf("raw: %v", err)
	}
	for _, tc := range []struct{ path, format, want string }{
		{q, "raw", "declared raw, but qemu-img says it is qcow2"},
		{raw, "qcow2", "declared qcow2, but qemu-img says it is raw"},
		{broken, "qcow2", "unreadable or corrupt"},
		{filepath.Join(dir, "missing.qcow2"), "qcow2", "no such file"},
		{dir, "raw", "not a regular file"},
		{iso, "iso", "no ISO 9660 signature"},
		{q, "qed", "want qcow2"},
	} {
		if _, err := tools.Check(ctx, tc.path, tc.format); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s as %s: got %v, want %q", filepath.Base(tc.path), tc.format, err, tc.want)
		}
	}
	if _, err := (Tools{QEMUImg: "/nonexistent/qemu-img"}).Check(ctx, q, "qcow2"); err == nil || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("missing qemu-img: %v", err)
	}
}

// TestOverlay checks that an overlay reads through to its master and
// that the master is left as it was.
func TestOverlay(t *testing.T) {
	needQEMUImg(t)
	ctx := context.Background()
	dir := t.TempDir()
	master := filepath.Join(dir, "master.raw")
	os.WriteFile(master, []byte("MASTER"), 0o644)
	os.Truncate(master, 1<<20)
	before, _ := os.ReadFile(master)
	ov := filepath.Join(dir, "ov.qcow2")
	var tools Tools
	if err := tools.CreateOverlay(ctx, master, "raw", ov); err != nil {
		t.Fatal(err)
	}
	if err := tools.CreateOverlay(ctx, master, "raw", ov); err == nil {
		t.Error("an existing overlay was overwritten")
	}
	in, err := tools.Inspect(ctx, ov)
	if err != nil || in.BackingFile != master || in.BackingFormat != "raw" || in.VirtualSize != 1<<20 {
		t.Fatalf("overlay info %+v, %v", in, err)
	}
	if _, err := exec.LookPath("qemu-io"); err == nil {
		run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 512", ov)
		out := run(t, "qemu-io", "-f", "qcow2", "-r", "-c", "read -v 512 6", ov)
		if !strings.Contains(out, "00 00 00 00") {
			t.Errorf("overlay read: %s", out)
		}
	}
	after, _ := os.ReadFile(master)
	if !bytes.Equal(before, after) {
		t.Error("the master changed")
	}
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return string(out)
}

// BenchmarkOverlayCreate shows that making an overlay costs the same for
// a 1 GiB and a 100 GiB master (sparse files, so the benchmark needs no
// disk space): qemu-img writes a header and empty tables, never data.
func BenchmarkOverlayCreate(b *testing.B) {
	needQEMUImg(b)
	ctx := context.Background()
	dir := b.TempDir()
	for _, size := range []int64{1 << 30, 100 << 30} {
		for _, format := range []string{"raw", "qcow2"} {
			master := filepath.Join(dir, fmt.Sprintf("m-%d.%s", size>>30, format))
			if format == "raw" {
				f, err := os.Create(master)
				if err != nil {
					b.Fatal(err)
				}
				f.Truncate(size)
				f.Close()
			} else {
				run(b, "qemu-img", "create", "-q", "-f", "qcow2", master, fmt.Sprint(size))
			}
			b.Run(fmt.Sprintf("master=%dGiB/%s", size>>30, format), func(b *testing.B) {
				i := 0
				for b.Loop() {
					ov := filepath.Join(dir, fmt.Sprintf("ov-%d", i))
					i++
					if err := (Tools{}).CreateOverlay(ctx, master, format, ov); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.Remove(ov)
					b.StartTimer()
				}
			})
		}
	}
}

func BenchmarkArgs(b *testing.B) {
	m := linuxMachine()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Args(m); err != nil {
			b.Fatal(err)
		}
	}
}

func TestArgsOEMStrings(t *testing.T) {
	m := Machine{Name: "x", Accel: "tcg", CPUs: 1, MemoryMB: 64, OS: "linux", Disk: Overlay, VNC: "unix:" + VNCSocket, Serial: SerialLog, QMP: QMPSocket,
		OEMStrings: OEMStringsFile, OEMValues: []string{"airlock.rdp_user=a,b"}}
	args, err := Args(m)
	if err != nil {
		t.Fatal(err)
	}
	a := strings.Join(args, " ")
	if !strings.Contains(a, "-smbios type=11,path="+OEMStringsFile) || !strings.Contains(a, "-smbios type=11,value=airlock.rdp_user=a,,b") {
		t.Errorf("argv: %s", a)
	}
	m.OEMStrings = "rel"
	if _, err := Args(m); err == nil {
		t.Error("a relative OEM strings file was accepted")
	}
}
