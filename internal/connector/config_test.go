package connector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/ticket"
)

// TestServeValidates: Serve refuses a bad Config, names the field, and
// closes the listener it was given.
func TestServeValidates(t *testing.T) {
	ca := newCA(t, "session CA")
	k := newKey(t)
	noCAs := ca.mutualTLS(t, ca)
	noCAs.ClientCAs = nil
	optional := ca.mutualTLS(t, ca)
	optional.ClientAuth = tls.VerifyClientCertIfGiven
	noCert := ca.mutualTLS(t, ca)
	noCert.Certificates = nil
	base := Config{Kind: KindVNC, Name: "c1", Session: "s1", Target: "127.0.0.1:5901", Key: k}
	for _, tt := range []struct {
		name, field string
		edit        func(*Config)
	}{
		{"kind", "Kind", func(c *Config) { c.Kind = "ssh" }},
		{"name", "Name", func(c *Config) { c.Name = "" }},
		{"session", "Session", func(c *Config) { c.Session = "" }},
		{"target", "Target", func(c *Config) { c.Target = "5901" }},
		{"relative unix target", "Target", func(c *Config) { c.Target = "unix:x.sock" }},
		{"zero key", "Key", func(c *Config) { c.Key = ticket.Key{} }},
		{"tls kind without TLS", "TLS", func(c *Config) { c.Kind = KindTLS }},
		{"tls kind without ClientCAs", "TLS.ClientCAs", func(c *Config) { c.Kind, c.TLS = KindTLS, noCAs }},
		{"tls kind with optional client certs", "TLS.ClientAuth", func(c *Config) { c.Kind, c.TLS = KindTLS, optional }},
		{"TLS without certificate", "TLS", func(c *Config) { c.TLS = noCert }},
		{"password on http", "VNCPassword", func(c *Config) { c.Kind, c.VNCPassword = KindHTTP, "x" }},
		{"negative idle", "IdleTimeout", func(c *Config) { c.IdleTimeout = -time.Second }},
		{"negative cookie TTL", "CookieTTL", func(c *Config) { c.CookieTTL = -time.Second }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			ln := listen(t)
			err := Serve(context.Background(), ln, cfg)
			if err == nil || !strings.Contains(err.Error(), "field "+tt.field+" ") && !strings.Contains(err.Error(), "field "+tt.field+":") {
				t.Fatalf("Serve = %v, want an error naming field %s", err, tt.field)
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener not closed: Accept = %v", err)
			}
		})
	}
}

// TestConfigRedacts: logging or printing a Config shows neither the VNC
// password nor the ticket key.
func TestConfigRedacts(t *testing.T) {
	k := newKey(t)
	cfg := Config{Kind: KindVNC, Name: "c1", Session: "s1", Target: "127.0.0.1:5901", Key: k, VNCPassword: "hunter22"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
	fmt.Fprintf(&buf, "%v %s %+v\n", cfg, cfg, cfg)
	out := buf.String()
	if strings.Contains(out, "hunter22") {
		t.Errorf("VNC password in output:\n%s", out)
	}
	if strings.Contains(out, fmt.Sprintf("%x", k[:])) || strings.Contains(out, fmt.Sprint(k[:])) {
		t.Errorf("key in output:\n%s", out)
	}
	if !strings.Contains(out, "127.0.0.1:5901") {
		t.Errorf("target missing from output:\n%s", out)
	}
}
