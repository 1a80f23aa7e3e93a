package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/airlock-hpc/airlock/internal/config"
	"github.com/airlock-hpc/airlock/internal/gateway"
	"github.com/airlock-hpc/airlock/internal/vm"
)

// withImage completes a vm profile with its image: what to boot, and the
// image's CPU and memory defaults and maximums, which are the session's.
func withImage(g gateway.Profile, p config.Profile, images []config.Image) gateway.Profile {
	if p.Kind != "vm" || p.VM == nil {
		return g
	}
	for _, im := range images {
		if im.Name != p.VM.Image {
			continue
		}
		g.CPUs, g.MaxCPUs = im.CPUs.Default, im.CPUs.Max
		g.MemoryMB, g.MaxMemoryMB = int(im.Memory.Default/config.MiB), int(im.Memory.Max/config.MiB)
		g.VM = &gateway.VMImage{
			Name: im.Name, Path: im.Path, Format: im.Format, OS: im.OS, Firmware: im.Firmware,
			Kernel: im.Kernel, Initrd: im.Initrd, Append: im.Append, RDP: im.RDP, RDPPassword: im.RDPPassword == "generate",
			SharePath: im.Share.Path, ShareReadOnly: im.Share.ReadOnly, PersistentAllowed: im.PersistentAllowed, GPUs: im.GPU,
		}
		for _, v := range im.Volumes {
			g.VM.Volumes = append(g.VM.Volumes, gateway.VMVolume{Path: v.Path, Tag: v.Tag, ReadOnly: v.ReadOnly})
		}
	}
	return g
}

// cmdImages lists the config's images and checks each: the file exists and
// qemu-img agrees with its declared format (and, for qcow2 and vdi, finds
// no corruption), a direct-boot kernel and initrd exist, UEFI firmware is
// installed when asked for. It exits 1 when any check fails.
func cmdImages(ctx context.Context, env *Env, args []string) int {
	fs := newFlags(env, "images", "[--config FILE]")
	cfgPath := fs.String("config", "", "airlock.yaml whose images to list (without it: the embedded defaults, which have none)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	cfg, err := loadConfig(*cfgPath, "", "")
	if err != nil {
		return fail(env, "%v", err)
	}
	if len(cfg.Images) == 0 {
		fmt.Fprintln(env.Stdout, "no images configured")
		return 0
	}
	failed := 0
	problem := func(name, format string, args ...any) {
		failed++
		fmt.Fprintf(env.Stderr, "airlock: image %s: %s\n", name, fmt.Sprintf(format, args...))
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		problem("*", "qemu-system-x86_64 not found: sessions cannot start on this node (Debian: qemu-system-x86)")
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFORMAT\tOS\tSIZE\tPATH\tCHECK")
	var tools vm.Tools
	for _, im := range cfg.Images {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		size, status := "-", "ok"
		in, err := tools.Check(ctx, im.Path, im.Format)
		if err == nil {
			size = config.Size(in.VirtualSize).String()
			err = deepCheck(ctx, im)
		}
		cancel()
		if err != nil {
			problem(im.Name, "%v", err)
			status = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, im.Format, im.OS, size, im.Path, status)
	}
	tw.Flush()
	if failed > 0 {
		return 1
	}
	return 0
}

// deepCheck is what `airlock images` checks beyond the launch-time checks:
// qemu-img check (which reads every table, so it is too slow to run at
// every launch), the direct-boot files and the firmware.
func deepCheck(ctx context.Context, im config.Image) error {
	var errs []error
	if im.Format == "qcow2" || im.Format == "vdi" {
		// Exit status 2 is corruption; 3 is only leaked clusters, which
		// waste space and harm nothing.
		out, err := exec.CommandContext(ctx, "qemu-img", "check", "--force-share", "-f", im.Format, im.Path).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
			errs = append(errs, fmt.Errorf("qemu-img check: %v: %s", err, strings.TrimSpace(string(out))))
		}
	}
	for key, p := range map[string]string{"kernel": im.Kernel, "initrd": im.Initrd} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("%s %s: not a readable file: %v", key, p, err))
		}
	}
	if im.Firmware == "uefi" {
		if _, _, err := vm.FindOVMF(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cmdVM is `airlock vm monitor SESSION ACTION [FILE]`: an admin's power
// button press, reset or screen dump of a VM session, through the
// gateway's admin API (which reaches QEMU's monitor on the node).
func cmdVM(ctx context.Context, env *Env, args []string) int {
	const synopsis = "monitor SESSION powerdown|reset|screendump FILE.png [--url URL] [--token-file FILE] [--ca FILE]"
	fs := newFlags(env, "vm", synopsis)
	gw := fs.String("url", "https://127.0.0.1:8443", "the gateway's address")
	tokenFile := fs.String("token-file", "", "file holding an admin's API token (POST /api/v1/tokens); default: $AIRLOCK_TOKEN")
	caFile := fs.String("ca", "", "PEM certificate(s) to trust for the gateway, such as its self-signed STATE_DIR/tls.crt; default: the system's roots")
	if len(args) == 0 || args[0] != "monitor" {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	var pos []string
	rest := args[1:]
	// Positional arguments and flags in any order.
	for len(rest) > 0 {
		if c := parse(fs, rest); c >= 0 {
			return c
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos, rest = append(pos, rest[0]), rest[1:]
		}
	}
	if len(pos) < 2 || (pos[1] == "screendump") != (len(pos) == 3) || len(pos) > 3 {
		fs.Usage()
		return 2
	}
	id, action := pos[0], pos[1]
	token := os.Getenv("AIRLOCK_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fail(env, "--token-file: %v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return fail(env, "no token: give --token-file or set AIRLOCK_TOKEN (tokens never go on the command line)")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail(env, "--ca: %v", err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return fail(env, "--ca %s: no PEM certificate in it", *caFile)
		}
	}
	u, err := url.Parse(strings.TrimRight(*gw, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fail(env, "--url %q: want https://HOST[:PORT]", *gw)
	}
	u = u.JoinPath("api/v1/admin/sessions", id, "vm", action)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", u.String(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := client.Do(req)
	if err != nil {
		return fail(env, "%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 128<<20))
	if err != nil {
		return fail(env, "read the answer: %v", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return fail(env, "%s %s: %s (%s)", action, id, e.Error.Message, e.Error.Code)
		}
		return fail(env, "%s %s: %s", action, id, resp.Status)
	}
	if action == "screendump" {
		out := pos[2]
		if !bytes.HasPrefix(body, []byte("\x89PNG")) {
			return fail(env, "screendump: the gateway did not send a PNG")
		}
		if err := os.WriteFile(out, body, 0o644); err != nil {
			return fail(env, "%v", err)
		}
		fmt.Fprintf(env.Stdout, "%s: screen of %s (%d bytes)\n", out, id, len(body))
		return 0
	}
	fmt.Fprintf(env.Stdout, "%s sent to %s\n", action, id)
	return 0
}
