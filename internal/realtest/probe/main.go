// Command probe is the tests' network probe: "serve" starts echo servers
// for each address given; "dial" tries each address and writes what
// happened as JSON. The escape tests run it inside and outside a seal.
//
// Addresses: tcp:HOST:PORT, udp:HOST:PORT, unix:/path, abstract:NAME,
// dns:SERVER:PORT:NAME (an A query over UDP to that server),
// connect:PROXY=TARGET (an HTTP CONNECT to TARGET through the proxy at
// PROXY, then the echo; the proxy's refusal is the error).
//
// For the unix guard's tests dial also knows: sendto:/path (one datagram,
// unconnected), via:LINK=TARGET (make a symlink, then connect through it),
// selfunix:/path (serve an echo there, then connect to it), wait:/path
// (wait until the path exists), iouring: (io_uring_setup), vsock: (a
// connection to port 22 of a VM's host), and
// race:GOOD|BAD|N (connect N times while another thread flips the address
// between GOOD and BAD; reached if a connection ever lands on BAD).
package main

import (
	"context"
	"net/http"

	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/coder/websocket"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// extraModes are the modes defined in other files of this command, each
// added by its file's init with addMode (in any order).
var extraModes map[string]func(args []string)

func addMode(name string, f func(args []string)) {
	if extraModes == nil {
		extraModes = map[string]func(args []string){}
	}
	extraModes[name] = f
}

func main() {
	if len(os.Args) > 1 && extraModes[os.Args[1]] != nil {
		extraModes[os.Args[1]](os.Args[2:])
		return
	}
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: probe serve ADDR... | probe dial OUT.json ADDR...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "dial":
		dial(os.Args[2], os.Args[3:])
	case "tlsinfo":
		tlsInfo(os.Args[2])
	default:
		os.Exit(2)
	}
}

func split(a string) (kind, rest string) {
	k, r, _ := strings.Cut(a, ":")
	return k, r
}

func serve(addrs []string) {
	for _, a := range addrs {
		kind, rest := split(a)
		switch kind {
		case "tcp", "unix":
			ln, err := net.Listen(kind, rest)
			must(err)
			go acceptEcho(ln)
		case "abstract":
			ln, err := net.Listen("unix", "@"+rest)
			must(err)
			go acceptEcho(ln)
		case "udp":
			pc, err := net.ListenPacket("udp", rest)
			must(err)
			go func() {
				buf := make([]byte, 512)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		case "dns":
			pc, err := net.ListenPacket("udp", rest)
			must(err)
			go dnsServe(pc)
		case "http":
			// http:tcp:HOST:PORT or http:unix:/path
			network, addr, _ := strings.Cut(rest, ":")
			ln, err := net.Listen(network, addr)
			must(err)
			go http.Serve(ln, appHandler())
		case "bench":
			// bench:tcp:HOST:PORT: the benchmarks' web app (benchHandler).
			// Port 0 picks a free one; the line "listening bench ADDR"
			// says which.
			network, addr, _ := strings.Cut(rest, ":")
			ln, err := net.Listen(network, addr)
			must(err)
			fmt.Println("listening bench", ln.Addr())
			go (&http.Server{Handler: benchHandler(), ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
		case "stream":
			// stream:tcp:HOST:PORT: raw TCP for the benchmarks' floor. The
			// client's first byte chooses: 'e' echoes what follows, 's'
			// sends benchChunk-byte writes until the client goes away.
			network, addr, _ := strings.Cut(rest, ":")
			ln, err := net.Listen(network, addr)
			must(err)
			fmt.Println("listening stream", ln.Addr())
			go acceptStream(ln)
		default:
			must(fmt.Errorf("unknown address %q", a))
		}
	}
	fmt.Println("serving")
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func acceptEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				c.Write(buf[:n])
			}
		}()
	}
}

// dnsServe answers an A query with one record, 192.0.2.7, and any other
// query with no records.
func dnsServe(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		end := 12
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		end += 5 // the root label, QTYPE, QCLASS
		if n < 12 || end > len(q) {
			continue
		}
		isA := q[end-4] == 0 && q[end-3] == 1
		resp := append([]byte{}, q[:2]...)
		an := byte(0)
		if isA {
			an = 1
		}
		resp = append(resp, 0x81, 0x80, 0, 1, 0, an, 0, 0, 0, 0)
		resp = append(resp, q[12:end]...)
		if isA {
			resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7)
		}
		pc.WriteTo(resp, from)
	}
}

// Result is what dial found for one address.
type Result struct {
	Addr    string `json:"addr"`
	Reached bool   `json:"reached"`
	Error   string `json:"error,omitempty"`
}

func dial(out string, addrs []string) {
	var res []Result
	for _, a := range addrs {
		err := try(a)
		r := Result{Addr: a, Reached: err == nil}
		if err != nil {
			r.Error = err.Error()
		}
		res = append(res, r)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	must(os.WriteFile(out, b, 0o644))
}

func try(a string) error {
	kind, rest := split(a)
	ping := []byte("airlock-probe")
	var c net.Conn
	var err error
	switch kind {
	case "sendto", "via", "selfunix", "wait", "iouring", "race", "vsock", "uevent":
		return tryUnixGuard(kind, rest)
	case "tcp", "udp", "unix":
		c, err = net.DialTimeout(kind, rest, 2*time.Second)
	case "abstract":
		c, err = net.DialTimeout("unix", "@"+rest, 2*time.Second)
	case "connect":
		proxy, target, _ := strings.Cut(rest, "=")
		if c, err = net.DialTimeout("tcp", proxy, 2*time.Second); err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		var head []byte
		one := make([]byte, 1)
		// Byte by byte, so nothing of the tunnel is read past the header.
		for !strings.HasSuffix(string(head), "\r\n\r\n") && len(head) < 4096 {
			if _, err := c.Read(one); err != nil {
				c.Close()
				return fmt.Errorf("proxy: %q: %w", head, err)
			}
			head = append(head, one[0])
		}
		if status, _, _ := strings.Cut(string(head), "\r\n"); !strings.Contains(status, " 200 ") {
			c.Close()
			return fmt.Errorf("proxy: %s", status)
		}
	case "dns":
		i := strings.LastIndex(rest, ":")
		server, name := rest[:i], rest[i+1:]
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "udp", server)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ips, err := r.LookupIPAddr(ctx, name)
		if err != nil {
			return err
		}
		if len(ips) == 0 {
			return fmt.Errorf("no answer")
		}
		return nil
	default:
		return fmt.Errorf("unknown address %q", a)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(ping); err != nil {
		return err
	}
	buf := make([]byte, len(ping))
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != string(ping) {
		return fmt.Errorf("echo mismatch")
	}
	return nil
}

// tlsInfo connects with TLS (no verification: it reports what it saw) and
// prints the version and the SHA-256 of the server's certificate.
func tlsInfo(addr string) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	must(err)
	defer c.Close()
	st := c.ConnectionState()
	sum := sha256.Sum256(st.PeerCertificates[0].Raw)
	fmt.Printf("%s %s\n", tls.VersionName(st.Version), hex.EncodeToString(sum[:]))
}

// appHandler is a stand-in web app: it reports what reached it (path,
// query, cookies, headers) as JSON, and echoes WebSocket messages on /ws.
func appHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})
	// /stream/sse and /stream/chunked send their first part at once and
	// the rest only when the client has gone: a proxy that buffers them
	// delivers nothing.
	mux.HandleFunc("/stream/{kind}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("kind") {
		case "sse":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
		case "chunked":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "first part\n")
		default:
			http.NotFound(w, r)
			return
		}
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The body is hashed as it streams in: tests send uploads of
		// several MiB and compare the SHA-256.
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"cookie": r.Header.Get("Cookie"), "authorization": r.Header.Get("Authorization"),
			"x_forwarded_user": r.Header.Get("X-Forwarded-User"),
			"content_type":     r.Header.Get("Content-Type"), "host": r.Host,
			"body_sha256": hex.EncodeToString(h.Sum(nil)), "body_len": strconv.FormatInt(n, 10),
		})
	})
	return mux
}

// benchChunk is the size of each write of the benchmarks' sources: one
// 64 KiB WebSocket message, or one 64 KiB TCP write.
const benchChunk = 64 << 10

// benchBody is the benchmark app's fixed answer to a plain request.
var benchBody = []byte("hello from the airlock bench app\n")

// benchHandler is the web app the gateway benchmarks put behind each proxy.
// The route is chosen by the path's last element, so it answers the same
// with or without the gateway's /s/ID/app prefix:
//
//   - .../source: a WebSocket that sends benchChunk-byte binary messages
//     until the client goes away (a framebuffer-like download);
//   - .../echo: a WebSocket that echoes each message;
//   - anything else: a small fixed text body.
func benchHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/source"):
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
			if err != nil {
				return
			}
			defer c.CloseNow()
			ctx := c.CloseRead(r.Context())
			msg := make([]byte, benchChunk)
			for c.Write(ctx, websocket.MessageBinary, msg) == nil {
			}
		case strings.HasSuffix(r.URL.Path, "/echo"):
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 20)
			for {
				typ, b, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, b); err != nil {
					return
				}
			}
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(benchBody)))
			w.Write(benchBody)
		}
	})
}

// acceptStream serves the stream mode (see serve).
func acceptStream(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			op := make([]byte, 1)
			if _, err := io.ReadFull(c, op); err != nil {
				return
			}
			switch op[0] {
			case 'e':
				// A plain loop, not io.Copy: that would splice through a
				// pipe, which is not what the proxies under test do.
				buf := make([]byte, benchChunk)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			case 's':
				buf := make([]byte, benchChunk)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}
		}()
	}
}
