// Package mailer sends the gateway's few e-mails (login links, "your
// session is ready") through the site's SMTP relay: STARTTLS on smtp://
// (always) or implicit TLS on smtps://, with a minimum TLS version, and
// AUTH PLAIN when a user name is configured.
package mailer

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Config is the relay.
type Config struct {
	// URL is smtp://host[:587] (STARTTLS) or smtps://host[:465].
	URL string
	// RootCAs is a PEM file of CA certificates; empty: the system's.
	RootCAs string
	// MinTLS is the oldest TLS version spoken. Default TLS 1.2.
	MinTLS uint16
	// From is the sender address ("airlock <airlock@example.org>").
	From string
	// User and Password, if User is set, log in with AUTH PLAIN.
	User, Password string
	// Timeout bounds one message. Default 30s.
	Timeout time.Duration
}

// Mailer sends messages through one relay. Safe for concurrent use.
type Mailer struct {
	cfg      Config
	addr     string
	tls      *tls.Config
	starttls bool
	from     *mail.Address
}

// New checks cfg.
func New(cfg Config) (*Mailer, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || (u.Scheme != "smtp" && u.Scheme != "smtps") {
		return nil, fmt.Errorf("mailer: relay %q: want smtp://host[:port] or smtps://host[:port]", cfg.URL)
	}
	m := &Mailer{cfg: cfg, starttls: u.Scheme == "smtp"}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "587", false: "465"}[m.starttls]
	}
	m.addr = net.JoinHostPort(u.Hostname(), port)
	m.from, err = mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mailer: from %q: %w", cfg.From, err)
	}
	m.cfg.Timeout = cmp.Or(cfg.Timeout, 30*time.Second)
	m.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: cmp.Or(cfg.MinTLS, tls.VersionTLS12)}
	if cfg.RootCAs != "" {
		pem, err := os.ReadFile(cfg.RootCAs)
		if err != nil {
			return nil, fmt.Errorf("mailer: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mailer: CA file %s: no PEM certificates", cfg.RootCAs)
		}
		m.tls.RootCAs = pool
	}
	return m, nil
}

// Send mails a plain-text message to one address.
func (m *Mailer) Send(ctx context.Context, to, subject, body string) error {
	rcpt, err := mail.ParseAddress(to)
	if err != nil {
		return fmt.Errorf("mailer: to: %w", err)
	}
	if strings.ContainsAny(subject, "\r\n") {
		return errors.New("mailer: a subject of more than one line")
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return fmt.Errorf("mailer: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var c *smtp.Client
	if m.starttls {
		c, err = smtp.NewClientStartTLS(conn, m.tls.Clone())
		if err != nil {
			conn.Close()
			return fmt.Errorf("mailer: %s: STARTTLS: %w", m.addr, err)
		}
	} else {
		tc := tls.Client(conn, m.tls.Clone())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("mailer: %s: TLS: %w", m.addr, err)
		}
		c = smtp.NewClient(tc)
	}
	defer c.Close()
	if m.cfg.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", m.cfg.User, m.cfg.Password)); err != nil {
			return fmt.Errorf("mailer: %s: AUTH: %w", m.addr, err)
		}
	}
	if err := c.Mail(m.from.Address, nil); err != nil {
		return fmt.Errorf("mailer: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(rcpt.Address, nil); err != nil {
		return fmt.Errorf("mailer: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	id := make([]byte, 12)
	rand.Read(id)
	host := m.from.Address[strings.LastIndexByte(m.from.Address, '@')+1:]
	msg := "From: " + m.from.String() + "\r\n" +
		"To: " + rcpt.String() + "\r\n" +
		"Subject: " + mime.QEncoding.Encode("utf-8", subject) + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <" + hex.EncodeToString(id) + "@" + host + ">\r\n" +
		"Auto-Submitted: auto-generated\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n" +
		strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	return c.Quit()
}
