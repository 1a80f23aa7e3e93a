package ldap

// Tests against servers that misbehave in ways slapd will not on demand:
// odd result codes, duplicate entries, silence. The same code paths have
// real-slapd tests in slapd_test.go.

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jimlambrt/gldap"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
)

// fake is an in-process gldap server whose answers a test sets.
type fake struct {
	url      string
	binds    atomic.Int64
	mu       sync.Mutex
	boundDNs []string
	filters  []string
	bindCode func(dn string) int
	entries  func(filter string) []string
}

func startFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{
		bindCode: func(string) int { return gldap.ResultSuccess },
		entries:  func(string) []string { return nil },
	}
	s, err := gldap.NewServer(gldap.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	mux, err := gldap.NewMux()
	if err != nil {
		t.Fatal(err)
	}
	mux.Bind(func(w *gldap.ResponseWriter, r *gldap.Request) {
		f.binds.Add(1)
		m, err := r.GetSimpleBindMessage()
		code := gldap.ResultProtocolError
		if err == nil {
			f.mu.Lock()
			f.boundDNs = append(f.boundDNs, m.UserName)
			code = f.bindCode(m.UserName)
			f.mu.Unlock()
		}
		w.Write(r.NewBindResponse(gldap.WithResponseCode(code)))
	})
	mux.Search(func(w *gldap.ResponseWriter, r *gldap.Request) {
		m, err := r.GetSearchMessage()
		if err != nil {
			w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultProtocolError)))
			return
		}
		f.mu.Lock()
		f.filters = append(f.filters, m.Filter)
		dns := f.entries(m.Filter)
		f.mu.Unlock()
		for _, dn := range dns {
			w.Write(r.NewSearchResponseEntry(dn))
		}
		w.Write(r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess)))
	})
	s.Router(mux)
	// gldap listens itself and does not say on which port; find a free
	// one and retry if it is taken meanwhile.
	for range 3 {
		addr := closedAddr(t)
		done := make(chan error, 1)
		go func() { done <- s.Run(addr) }()
		err := authtest.WaitFor(5*time.Second, func() error {
			select {
			case err := <-done:
				done <- err
				return nil
			default:
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		})
		select {
		case err := <-done:
			t.Logf("gldap on %s: %v; retrying", addr, err)
			continue
		default:
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.Stop()
			<-done
		})
		f.url = "ldap://" + addr
		return f
	}
	t.Fatal("gldap never started")
	return nil
}

func (f *fake) setBind(code func(dn string) int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bindCode = code
}

func (f *fake) setEntries(entries func(filter string) []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = entries
}

func TestFakeEmptyPasswordNeverBinds(t *testing.T) {
	f := startFake(t)
	a := mustNew(t, Config{URL: f.url, BindDN: bindTemplate})
	wantErr(t, a, "alice", "", auth.ErrInvalid)
	if n := f.binds.Load(); n != 0 {
		t.Fatalf("%d binds for an empty password, want none", n)
	}
	wantIdentity(t, a, "alice", "x", false) // the fake says yes to anything else
}

func TestFakeResultCodes(t *testing.T) {
	f := startFake(t)
	a := mustNew(t, Config{URL: f.url, BindDN: bindTemplate})
	for code, want := range map[int]error{
		gldap.ResultInvalidCredentials:       auth.ErrInvalid,
		gldap.ResultUnwillingToPerform:       auth.ErrInvalid, // e.g. a locked account
		gldap.ResultInsufficientAccessRights: auth.ErrInvalid,
		gldap.ResultBusy:                     auth.ErrUnavailable,
		gldap.ResultUnavailable:              auth.ErrUnavailable,
		gldap.ResultOther:                    auth.ErrUnavailable,
		gldap.ResultOperationsError:          auth.ErrUnavailable,
	} {
		f.setBind(func(string) int { return code })
		_, err := a.Authenticate(context.Background(), "alice", "pw")
		if !errors.Is(err, want) {
			t.Errorf("bind result %d: %v, want %v", code, err, want)
		}
	}
}

// TestFakeEscapingOnTheWire checks what the server receives for names
// only the unchecked path lets through.
func TestFakeEscapingOnTheWire(t *testing.T) {
	f := startFake(t)
	f.setBind(func(dn string) int {
		if dn == "cn=svc" {
			return gldap.ResultSuccess
		}
		return gldap.ResultInvalidCredentials
	})
	tmpl := mustNew(t, Config{URL: f.url, BindDN: bindTemplate})
	search := mustNew(t, Config{URL: f.url, BaseDN: "dc=example,dc=test", Filter: "(uid={user})", SearchBindDN: "cn=svc", SearchBindPassword: "pw"})
	tmpl.authenticate(context.Background(), "alice,ou=evil", "pw")
	search.authenticate(context.Background(), "*)(uid=*", "pw")
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.boundDNs) == 0 || f.boundDNs[0] != `uid=alice\,ou=evil,`+"ou=people,dc=example,dc=test" {
		t.Errorf("bind DNs %q", f.boundDNs)
	}
	if len(f.filters) != 1 || strings.Contains(f.filters[0], "*") {
		t.Errorf("filters %q: the * reached the server unescaped", f.filters)
	}
}

func TestFakeSearchCounts(t *testing.T) {
	f := startFake(t)
	cfg := Config{URL: f.url, BaseDN: "dc=example,dc=test", Filter: "(uid={user})", SearchBindDN: "cn=svc", SearchBindPassword: "svc-pw"}
	a := mustNew(t, cfg)

	f.setEntries(func(string) []string { return []string{"uid=a,dc=example,dc=test", "uid=b,dc=example,dc=test"} })
	wantErr(t, a, "alice", "pw", auth.ErrInvalid)

	f.setEntries(func(string) []string { return []string{"uid=alice,dc=example,dc=test"} })
	wantIdentity(t, a, "alice", "pw", false)

	// An unknown user costs the same two binds as a known one with a
	// wrong password: the search account's, then one more.
	f.setEntries(func(string) []string { return nil })
	before := f.binds.Load()
	wantErr(t, a, "nobody", "pw", auth.ErrInvalid)
	if n := f.binds.Load() - before; n != 2 {
		t.Errorf("unknown user: %d binds, want 2 like a known user", n)
	}
}

// TestFakeSilentServer: a server that accepts connections and never
// answers must not hold a login for longer than Timeout, nor after the
// caller gives up.
func TestFakeSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	url := "ldap://" + ln.Addr().String()

	a := mustNew(t, Config{URL: url, BindDN: bindTemplate, Timeout: 300 * time.Millisecond})
	start := time.Now()
	_, err = a.Authenticate(context.Background(), "alice", "pw")
	if !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("silent server: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("silent server held the login %s with Timeout 300ms", d)
	}

	slow := mustNew(t, Config{URL: url, BindDN: bindTemplate, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = slow.Authenticate(ctx, "alice", "pw")
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("caller's deadline: %v, want context.DeadlineExceeded only", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ignored the caller's deadline for %s", d)
	}

	// StartTLS against the same silence.
	tlsCfg := Config{URL: url, StartTLS: true, BindDN: bindTemplate, Timeout: 300 * time.Millisecond}
	wantErr(t, mustNew(t, tlsCfg), "alice", "pw", auth.ErrUnavailable)
}
