package ratelimit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/auth"
	"github.com/airlock-hpc/airlock/internal/auth/internal/authtest"
)

func TestMain(m *testing.M) { authtest.Main(m, "airlock/internal/auth/ratelimit") }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustNew(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestUserBurstThenOneEveryInterval(t *testing.T) {
	l := mustNew(t, Config{}) // 5 per user per 15 min
	now := t0
	for i := range 5 {
		// Different addresses, so only the user limit can bite.
		addr := fmt.Sprintf("192.0.2.%d:5000", i)
		if err := l.Allow("alice", addr, now); err != nil {
			t.Fatalf("attempt %d refused: %v", i+1, err)
		}
		l.Fail("alice", addr, now)
	}
	err := l.Allow("alice", "198.51.100.1:1", now)
	le, ok := errors.AsType[*LimitError](err)
	if !ok || !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("6th attempt: got %v, want a *LimitError wrapping ErrRateLimited", err)
	}
	if le.By != "user" || le.RetryAfter != 3*time.Minute {
		t.Errorf("got By=%q RetryAfter=%s, want user, 3m0s", le.By, le.RetryAfter)
	}
	if err := l.Allow("bob", "198.51.100.1:1", now); err != nil {
		t.Errorf("another user is limited too: %v", err)
	}

	// Failing while blocked does not extend the lockout.
	l.Fail("alice", "198.51.100.1:1", now)
	now = now.Add(3*time.Minute - time.Second)
	if err := l.Allow("alice", "198.51.100.2:1", now); err == nil {
		t.Fatal("allowed before the interval passed")
	}
	now = now.Add(time.Second)
	if err := l.Allow("alice", "198.51.100.2:1", now); err != nil {
		t.Fatalf("one interval later: %v", err)
	}
	l.Fail("alice", "198.51.100.2:1", now)
	if err := l.Allow("alice", "198.51.100.2:1", now); err == nil {
		t.Fatal("a second attempt in the same interval was allowed")
	}
	// A full window later the bucket is empty and the key forgotten.
	now = now.Add(15 * time.Minute)
	if err := l.Allow("alice", "198.51.100.2:1", now); err != nil {
		t.Fatal(err)
	}
	l.Fail("carol", "203.0.113.9", now) // prunes
	if u, _ := l.Len(); u != 1 {
		t.Errorf("%d user keys after alice drained, want 1 (carol)", u)
	}
}

func TestAddressLimitSpansUsersAndPorts(t *testing.T) {
	l := mustNew(t, Config{})
	for i := range 20 {
		user := fmt.Sprintf("user%d", i)
		addr := fmt.Sprintf("192.0.2.7:%d", 40000+i) // new port each time
		if err := l.Allow(user, addr, t0); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		l.Fail(user, addr, t0)
	}
	err := l.Allow("fresh", "192.0.2.7:1", t0)
	if le, ok := errors.AsType[*LimitError](err); !ok || le.By != "address" {
		t.Fatalf("21st attempt from the address: got %v, want an address limit", err)
	}
	if err := l.Allow("fresh", "192.0.2.7", t0); err == nil {
		t.Error("a bare IP is a different key from ip:port")
	}
	if err := l.Allow("fresh", "192.0.2.8:1", t0); err != nil {
		t.Errorf("a neighbouring address is limited too: %v", err)
	}
}

func TestIPv6GroupedBy64(t *testing.T) {
	l := mustNew(t, Config{AddrLimit: 2})
	l.Fail("a", "[2001:db8:1:2::1]:443", t0)
	l.Fail("b", "[2001:db8:1:2:ffff::9]:443", t0)
	if err := l.Allow("c", "2001:db8:1:2::77", t0); err == nil {
		t.Error("another address in the same /64 is not limited")
	}
	if err := l.Allow("c", "[2001:db8:1:3::1]:443", t0); err != nil {
		t.Errorf("the next /64 is limited: %v", err)
	}
	// IPv4-mapped IPv6 is the IPv4 address.
	l.Fail("a", "[::ffff:192.0.2.1]:1", t0)
	l.Fail("b", "192.0.2.1:2", t0)
	if err := l.Allow("c", "192.0.2.1:3", t0); err == nil {
		t.Error("::ffff:192.0.2.1 and 192.0.2.1 are different keys")
	}
}

func TestSucceedForgetsUserNotAddress(t *testing.T) {
	l := mustNew(t, Config{UserLimit: 2, AddrLimit: 3})
	l.Fail("alice", "192.0.2.1:1", t0)
	l.Fail("alice", "192.0.2.1:1", t0)
	if l.Allow("alice", "192.0.2.2:1", t0) == nil {
		t.Fatal("alice not limited")
	}
	l.Succeed("alice", "192.0.2.1:1")
	if err := l.Allow("alice", "192.0.2.2:1", t0); err != nil {
		t.Fatalf("alice still limited after a success: %v", err)
	}
	// The attacker's own successful login must not refill the address.
	l.Fail("bob", "192.0.2.1:1", t0)
	if err := l.Allow("mallory", "192.0.2.1:1", t0); err == nil {
		t.Fatal("address not limited after 3 failures")
	}
	l.Succeed("mallory", "192.0.2.1:1")
	if err := l.Allow("carol", "192.0.2.1:1", t0); err == nil {
		t.Fatal("a success reset the address's failures")
	}
}

// TestFloodStaysBounded is the attacker who sends a failed login for a
// million random user names (from many addresses) to exhaust memory or to
// push a targeted user's failures out of the table.
func TestFloodStaysBounded(t *testing.T) {
	const max = 1000
	l := mustNew(t, Config{MaxKeys: max})
	for range 5 {
		l.Fail("alice", "192.0.2.1:1", t0)
	}
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	for i := range 200_000 {
		name := fmt.Sprintf("u%016x", r.Uint64())
		addr := fmt.Sprintf("10.%d.%d.%d:1", r.IntN(256), r.IntN(256), r.IntN(256))
		l.Fail(name, addr, now)
		if i%1000 == 0 {
			now = now.Add(time.Millisecond)
		}
	}
	users, addrs := l.Len()
	if users > max || addrs > max {
		t.Fatalf("tables grew to %d users, %d addresses; cap %d", users, addrs, max)
	}
	if users != max {
		t.Errorf("user table holds %d keys, want it full (%d)", users, max)
	}
	if err := l.Allow("alice", "192.0.2.99:1", now); err == nil {
		t.Error("the flood evicted alice's failures")
	}
	// Huge names cost a fixed-size key.
	long := strings.Repeat("x", 1<<20)
	l.Fail(long, long, now)
	for k := range l.users.keys {
		if len(k) > maxKeyLen {
			t.Fatalf("stored a %d-byte key", len(k))
		}
	}
	if l.Allow(long, "192.0.2.98:1", now) != nil {
		t.Error("one failure of a long name limited it")
	}
}

func TestConcurrentFailuresAllCounted(t *testing.T) {
	const goroutines, each = 8, 50
	l := mustNew(t, Config{UserLimit: goroutines * each, AddrLimit: goroutines * each})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				_ = l.Allow("alice", fmt.Sprintf("192.0.2.%d:1", g), t0)
				l.Fail("alice", "192.0.2.1:1", t0)
				l.Fail(fmt.Sprintf("u%d", g), "192.0.2.2:1", t0)
			}
		})
	}
	wg.Wait()
	if err := l.Allow("alice", "192.0.2.3:1", t0); err == nil {
		t.Error("a failure was lost: alice is not at her limit")
	}
	if err := l.Allow("zed", "192.0.2.1:1", t0); err == nil {
		t.Error("a failure was lost: the address is not at its limit")
	}
}

func TestConfig(t *testing.T) {
	for _, bad := range []Config{{UserLimit: -1}, {AddrLimit: -2}, {Window: time.Millisecond}, {MaxKeys: -1}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	l := mustNew(t, Config{})
	if l.users.interval != int64(3*time.Minute) || l.addrs.interval != int64(45*time.Second) || l.users.max != 1<<16 {
		t.Errorf("defaults: user interval %s, address interval %s, max %d",
			time.Duration(l.users.interval), time.Duration(l.addrs.interval), l.users.max)
	}
}

func TestLimitErrorText(t *testing.T) {
	err := error(&LimitError{By: "user", RetryAfter: 90*time.Second + time.Millisecond})
	want := "login limited by user for 1m30s: " + auth.ErrRateLimited.Error()
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

// BenchmarkAllow is the check every login makes first, against a table
// holding many keys.
func BenchmarkAllow(b *testing.B) {
	l := mustNew(b, Config{})
	for i := range 10_000 {
		l.Fail(fmt.Sprintf("user%d", i), fmt.Sprintf("10.0.%d.%d:1", i/256, i%256), t0)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Allow("user42", "10.0.0.42:51234", t0)
	}
}

func BenchmarkFail(b *testing.B) {
	l := mustNew(b, Config{MaxKeys: 10_000})
	names := make([]string, 4096)
	for i := range names {
		names[i] = fmt.Sprintf("user%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Fail(names[i%len(names)], "10.0.0.1:1", t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
}
