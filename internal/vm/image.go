// Package vm is what airlock knows about QEMU: master images and the
// checks made on them (qemu-img info), the throwaway qcow2 overlay a
// session writes to instead of the master, the QEMU command line (a pure
// function of a Machine, so it is tested without running anything) and a
// small QMP client for the admin monitor (power button, reset, screen
// dump).
//
// It is on the seal side: the runner uses it to prepare a VM session inside
// the seal, and it imports nothing of the gateway.
package vm

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// Formats are the master image formats airlock accepts.
var Formats = []string{"qcow2", "raw", "vmdk", "vdi", "iso"}

// OSes are the guest OS families; they choose the disk and network models
// and how the owner's folder is shared (SMB for windows, 9p otherwise).
var OSes = []string{"windows", "linux", "other"}

// Info is what `qemu-img info --output=json` says of an image.
type Info struct {
	// Format is what qemu-img detected: qcow2, raw, vmdk, vdi, ...
	Format string `json:"format"`
	// VirtualSize is the disk size the guest sees, in bytes.
	VirtualSize int64 `json:"virtual-size"`
	// ActualSize is what the file takes on the host, in bytes.
	ActualSize int64 `json:"actual-size"`
	// BackingFile is the image this one is an overlay of, as written in
	// the image ("" for none).
	BackingFile string `json:"backing-filename"`
	// BackingFormat is the backing file's format, if the image names it.
	BackingFormat string `json:"backing-filename-format"`
	// Corrupt is set when qemu-img found a qcow2 image marked corrupt.
	Corrupt bool `json:"-"`
}

// maxInfo bounds qemu-img's output; real output is under 2 KiB, more for
// long backing chains.
const maxInfo = 1 << 20

// ParseInfo decodes the JSON that `qemu-img info --output=json` prints for
// one image. It refuses anything that is not a single JSON object with a
// format and a non-negative size.
func ParseInfo(data []byte) (*Info, error) {
	if len(data) > maxInfo {
		return nil, fmt.Errorf("qemu-img info: output larger than %d bytes", maxInfo)
	}
	var raw struct {
		Info
		FormatSpecific *struct {
			Type string `json:"type"`
			Data struct {
				Corrupt bool `json:"corrupt"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("qemu-img info: bad JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("qemu-img info: more than one JSON value")
	}
	in := raw.Info
	if in.Format == "" {
		return nil, errors.New("qemu-img info: no format")
	}
	if in.VirtualSize < 0 || in.ActualSize < 0 {
		return nil, errors.New("qemu-img info: negative size")
	}
	if fs := raw.FormatSpecific; fs != nil && fs.Type == "qcow2" {
		in.Corrupt = fs.Data.Corrupt
	}
	return &in, nil
}

// Tools names the QEMU programs; empty fields are looked up in PATH.
type Tools struct {
	QEMUImg string // default "qemu-img"
	// As runs the programs with these credentials: root preparing files
	// in a directory its owner controls does it as the owner, so that a
	// symbolic link there leads nowhere the owner could not go anyway.
	As *syscall.Credential
}

func (t Tools) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, t.qemuImg(), args...)
	if t.As != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: t.As}
	}
	return cmd
}

func (t Tools) qemuImg() string {
	if t.QEMUImg != "" {
		return t.QEMUImg
	}
	return "qemu-img"
}

// Inspect runs `qemu-img info` on path, letting qemu-img detect the format
// (so a file is judged by its content, never by what it claims), with
// --force-share so an image other VMs have open can be inspected.
func (t Tools) Inspect(ctx context.Context, path string) (*Info, error) {
	cmd := t.command(ctx, "info", "--force-share", "--output=json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s not found: install QEMU's tools (Debian: qemu-utils): %w", t.qemuImg(), err)
		}
		msg := strings.TrimSpace(stderr.String())
		msg = strings.TrimPrefix(msg, "qemu-img: ")
		return nil, fmt.Errorf("image %s is unreadable or corrupt: %s", path, cmp.Or(msg, err.Error()))
	}
	return ParseInfo(out)
}

// Check verifies that the master image at path exists, is a regular file,
// and is in the format it is declared to be. An ISO is raw to qemu-img and
// must carry the ISO 9660 signature. A raw declaration of a file that
// qemu-img sees as qcow2 (or any other format) is refused: opening it as
// raw would hand the guest the container's bytes, and the other way round
// a crafted header could point QEMU at any host file as a backing file.
func (t Tools) Check(ctx context.Context, path, format string) (*Info, error) {
	if !slices.Contains(Formats, format) {
		return nil, fmt.Errorf("image %s: format %q: want %s", path, format, strings.Join(Formats, ", "))
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("image %s: not a regular file", path)
	}
	in, err := t.Inspect(ctx, path)
	if err != nil {
		return nil, err
	}
	want := format
	if format == "iso" {
		want = "raw"
	}
	if in.Format != want {
		return nil, fmt.Errorf("image %s: declared %s, but qemu-img says it is %s", path, format, in.Format)
	}
	if in.Corrupt {
		return nil, fmt.Errorf("image %s: qemu-img says the qcow2 image is marked corrupt (try qemu-img check -r)", path)
	}
	if format == "iso" {
		if err := checkISO(path); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// checkISO looks for "CD001" in the first volume descriptor (sector 16 of
// 2048 bytes, offset 1).
func checkISO(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	b := make([]byte, 5)
	if _, err := f.ReadAt(b, 16*2048+1); err != nil || string(b) != "CD001" {
		return fmt.Errorf("image %s: declared iso, but it has no ISO 9660 signature", path)
	}
	return nil
}

// CreateOverlay makes a qcow2 overlay at overlay whose backing file is
// master (in masterFormat): the session writes there and the master is only
// ever read. Its cost does not depend on the master's size: qemu-img
// writes a header and empty tables, sized by the virtual size but never
// copying data. The overlay must not exist yet.
func (t Tools) CreateOverlay(ctx context.Context, master, masterFormat, overlay string) error {
	if masterFormat == "iso" {
		return errors.New("overlay: an ISO boots from a CD-ROM drive, not an overlay")
	}
	if _, err := os.Lstat(overlay); err == nil {
		return fmt.Errorf("overlay %s: already exists", overlay)
	}
	cmd := t.command(ctx, "create", "-q", "-f", "qcow2", "-b", master, "-F", masterFormat, overlay)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("create overlay %s on %s: %v: %s", overlay, master, err, strings.TrimSpace(string(out)))
	}
	return nil
}
