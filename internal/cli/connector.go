package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/airlock-hpc/airlock/internal/connector"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/seal/fdpass"
	"github.com/airlock-hpc/airlock/internal/ticket"
	"golang.org/x/sys/unix"
)

func cmdConnector(ctx context.Context, env *Env, args []string) int {
	// First of all: a process that is not dumpable can be ptraced, and its
	// /proc/PID/{mem,environ,fd} opened, only with CAP_SYS_PTRACE, which
	// the workload never has. The seal's Landlock scope already keeps the
	// workload out; this holds on kernels without it too.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(env.Stderr, "usage: airlock connector vnc|http|tls|rnode --fd N --target ADDR --name NAME --session ID [flags]")
		return 2
	}
	kind := contract.ConnectorKind(args[0])
	fs := newFlags(env, "connector "+string(kind), "--fd N --target ADDR --name NAME --session ID [flags]")
	fdArg := fs.String("fd", "", "inherited listening socket to serve (3 or more). Without it, a single LISTEN_FDS socket from systemd-style activation is used.")
	secretsFD := fs.String("secrets-fd", "", "inherited pipe to read the key, certificate and passwords from (JSON, as the runner writes it); replaces the *-file flags")
	target := fs.String("target", "", "where to forward inside the seal: HOST:PORT or unix:/path. Required.")
	name := fs.String("name", "", "this connector's name; tickets must name it. Required.")
	session := fs.String("session", "", "session id; tickets must name it. Required.")
	keyFile := fs.String("key-file", "", "ticket key file (32 bytes raw or 64 hex); required for vnc and http unless --secrets-fd")
	certFile := fs.String("cert-file", "", "TLS certificate (PEM) presented on a TCP listener; required for a TCP listener")
	certKeyFile := fs.String("cert-key-file", "", "private key (PEM) of --cert-file")
	caFile := fs.String("client-ca-file", "", "CA (PEM) that client certificates must chain to; required for kind tls")
	vncPassFile := fs.String("vnc-password-file", "", "vnc only: answer the server's VNC password challenge with the password in this file, so users never see it")
	idle := fs.Duration("idle", 0, "close a connection after this long without traffic; 0 never")
	cookiePath := fs.String("cookie-path", "", "rnode only: the path the browser sees the connector under (/rnode/HOST/PORT/), to scope its cookie to; default /")
	mkLog := logFlags(fs)
	if c := parse(fs, args[1:]); c >= 0 {
		return c
	}
	if *target == "" || *name == "" || *session == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	log, err := mkLog(env.Stderr)
	if err != nil {
		return fail(env, "%v", err)
	}

	var sec contract.ConnectorSecrets
	if *secretsFD != "" {
		fd, err := fdpass.ParseFD(*secretsFD)
		if err != nil {
			return fail(env, "--secrets-fd: %v", err)
		}
		f := os.NewFile(uintptr(fd), "secrets")
		b, err := io.ReadAll(io.LimitReader(f, 1<<20))
		f.Close()
		if err != nil {
			return fail(env, "read --secrets-fd: %v", err)
		}
		if err := json.Unmarshal(b, &sec); err != nil {
			return fail(env, "decode --secrets-fd: %v", err)
		}
	} else {
		if err := secretsFromFiles(&sec, *keyFile, *certFile, *certKeyFile, *caFile, *vncPassFile); err != nil {
			return fail(env, "%v", err)
		}
	}

	var ln net.Listener
	if *fdArg != "" {
		fd, err := fdpass.ParseFD(*fdArg)
		if err != nil {
			return fail(env, "--fd: %v", err)
		}
		if ln, err = fdpass.Listener(fd); err != nil {
			return fail(env, "%v", err)
		}
	} else {
		fds := fdpass.ListenFDs()
		if len(fds) != 1 {
			return fail(env, "no --fd given and LISTEN_FDS passed %d sockets (want 1)", len(fds))
		}
		if ln, err = fdpass.Listener(fds[0]); err != nil {
			return fail(env, "%v", err)
		}
	}

	cfg := connector.Config{Kind: kind, Name: *name, Session: *session, Target: *target, IdleTimeout: *idle, Logger: log, VNCPassword: sec.VNCPassword,
		Secret: sec.Secret, CookiePath: *cookiePath}
	if sec.TicketKey != "" {
		kb, err := hex.DecodeString(sec.TicketKey)
		if err != nil {
			return fail(env, "ticket key: %v", err)
		}
		if cfg.Key, err = ticket.ParseKey(kb); err != nil {
			return fail(env, "%v", err)
		}
	}
	_, isTCP := ln.Addr().(*net.TCPAddr)
	if sec.CertPEM != "" {
		cert, err := tls.X509KeyPair([]byte(sec.CertPEM), []byte(sec.KeyPEM))
		if err != nil {
			return fail(env, "TLS certificate: %v", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else if k, _ := contract.Lookup(kind); isTCP && !k.PlainTCP {
		// TLS on every hop: a cleartext TCP connector would expose tickets
		// and screens to anyone on the cluster network.
		return fail(env, "connector %s: a TCP listener needs a TLS certificate (--cert-file or --secrets-fd)", *name)
	}
	if k, _ := contract.Lookup(kind); k.ClientCerts {
		if cfg.TLS == nil {
			return fail(env, "connector %s: kind %s needs a certificate", *name, kind)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(sec.ClientCAPEM)) {
			return fail(env, "connector %s: kind tls needs a client CA (--client-ca-file)", *name)
		}
		cfg.TLS.ClientCAs = pool
		cfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := connector.Serve(ctx, ln, cfg); err != nil {
		return fail(env, "connector %s: %v", *name, err)
	}
	return 0
}

func secretsFromFiles(sec *contract.ConnectorSecrets, keyFile, certFile, certKeyFile, caFile, vncPassFile string) error {
	if keyFile != "" {
		k, err := ticket.LoadKey(keyFile)
		if err != nil {
			return err
		}
		sec.TicketKey = hex.EncodeToString(k[:])
	}
	if (certFile == "") != (certKeyFile == "") {
		return fmt.Errorf("--cert-file and --cert-key-file go together")
	}
	if certFile != "" {
		c, err := readFile("cert-file", certFile)
		if err != nil {
			return err
		}
		k, err := readFile("cert-key-file", certKeyFile)
		if err != nil {
			return err
		}
		sec.CertPEM, sec.KeyPEM = string(c), string(k)
	}
	if caFile != "" {
		b, err := readFile("client-ca-file", caFile)
		if err != nil {
			return err
		}
		sec.ClientCAPEM = string(b)
	}
	if vncPassFile != "" {
		b, err := readFile("vnc-password-file", vncPassFile)
		if err != nil {
			return err
		}
		sec.VNCPassword = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}
