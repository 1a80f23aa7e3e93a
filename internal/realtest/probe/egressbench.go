package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// egressbench OUT.json PROXY|- TARGET N BYTES: N times, a new connection
// to TARGET (an echo server) through the HTTP CONNECT proxy at PROXY ("-":
// straight to TARGET), one byte there and back; then one connection that
// sends BYTES and reads them back. It writes the round trips' p50 and p99
// (µs) and the stream's MB/s to OUT.json, for the kiosk egress benchmark.
func init() { addMode("egressbench", egressBench) }

func egressBench(args []string) {
	if len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: probe egressbench OUT.json PROXY|- TARGET N BYTES")
		os.Exit(2)
	}
	out, proxy, target := args[0], args[1], args[2]
	n, _ := strconv.Atoi(args[3])
	size, _ := strconv.Atoi(args[4])
	res := map[string]any{}
	fail := func(err error) {
		res["error"] = err.Error()
		b, _ := json.Marshal(res)
		os.WriteFile(out+".tmp", b, 0o644)
		os.Rename(out+".tmp", out)
		os.Exit(1)
	}
	var rtts []time.Duration
	one := []byte{42}
	for range n {
		t0 := time.Now()
		c, err := tunnel(proxy, target)
		if err != nil {
			fail(err)
		}
		if _, err := c.Write(one); err != nil {
			fail(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			fail(err)
		}
		rtts = append(rtts, time.Since(t0))
		c.Close()
	}
	slices.Sort(rtts)
	res["connect_p50_us"] = rtts[len(rtts)/2].Microseconds()
	res["connect_p99_us"] = rtts[len(rtts)*99/100].Microseconds()

	c, err := tunnel(proxy, target)
	if err != nil {
		fail(err)
	}
	t0 := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, c, int64(size))
		done <- err
	}()
	buf := make([]byte, 64<<10)
	for left := size; left > 0; left -= len(buf) {
		if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
			fail(err)
		}
	}
	if err := <-done; err != nil {
		fail(err)
	}
	res["mb_per_s"] = float64(size) / 1e6 / time.Since(t0).Seconds()
	c.Close()
	b, _ := json.Marshal(res)
	os.WriteFile(out+".tmp", b, 0o644)
	os.Rename(out+".tmp", out)
}

// tunnel connects to target, through the CONNECT proxy unless it is "-".
func tunnel(proxy, target string) (net.Conn, error) {
	if proxy == "-" {
		return net.DialTimeout("tcp", target, 5*time.Second)
	}
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	var head []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if len(head) > 4096 {
			c.Close()
			return nil, fmt.Errorf("proxy: header too long")
		}
		if _, err := c.Read(b); err != nil {
			c.Close()
			return nil, fmt.Errorf("proxy: %q: %w", head, err)
		}
		head = append(head, b[0])
	}
	if status, _, _ := strings.Cut(string(head), "\r\n"); !strings.Contains(status, " 200 ") {
		c.Close()
		return nil, fmt.Errorf("proxy: %s", status)
	}
	return c, nil
}
