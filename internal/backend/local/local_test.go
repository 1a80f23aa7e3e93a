package local

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind (a
// watch that does not end with its context, a runner nobody reaps).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newBackend(t *testing.T, dir string) *Backend {
	b, err := New(Config{Dir: dir, Exe: realtest.Binary(t), Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nextEvent(t *testing.T, ch <-chan backend.Event) backend.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event in 30s")
	}
	return backend.Event{}
}

func spec(t *testing.T, id string) []byte {
	owner := ""
	if os.Geteuid() == 0 {
		owner = realtest.TestUser(t).Name
	}
	b, _ := json.Marshal(map[string]any{
		"id": id, "owner": owner,
		"workload": map[string]any{"argv": []string{"sleep", "1000"}},
	})
	return b
}

// TestStartWatchStop: a session started by the local backend becomes
// ready, a gateway "restart" (a new Backend watching the stored ref) sees
// it again from the start, and Stop ends it with the runner's reason.
func TestStartWatchStop(t *testing.T) {
	dir := t.TempDir()
	b := newBackend(t, dir)
	id := fmt.Sprintf("local-%d", time.Now().UnixNano()%1e6)
	ref, err := b.Start(t.Context(), backend.Job{ID: id, Spec: spec(t, id)})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := b.Watch(t.Context(), id, ref)
	if err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch); e.Kind != "ready" {
		t.Fatalf("first event %+v", e)
	}

	// A new gateway process knows only the ref from its store.
	b2 := newBackend(t, dir)
	ch2, err := b2.Watch(t.Context(), id, ref)
	if err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch2); e.Kind != "ready" {
		t.Fatalf("re-attached watch: first event %+v", e)
	}
	if err := b2.Stop(t.Context(), id, ref); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, ch2); e.Kind != "exit" || e.Reason != "stopped by SIGTERM" {
		t.Fatalf("after stop: %+v", e)
	}
	if err := b2.Stop(t.Context(), id, ref); err == nil {
		t.Fatal("stopping an ended runner succeeded")
	}
}

// TestRunnerKilled: a runner killed outright is noticed as an exit with a
// reason, within seconds.
func TestRunnerKilled(t *testing.T) {
	b := newBackend(t, t.TempDir())
	id := fmt.Sprintf("killed-%d", time.Now().UnixNano()%1e6)
	ref, err := b.Start(t.Context(), backend.Job{ID: id, Spec: spec(t, id)})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := b.Watch(t.Context(), id, ref)
	if e := nextEvent(t, ch); e.Kind != "ready" {
		t.Fatalf("first event %+v", e)
	}
	pid, ok := alive(ref)
	if !ok {
		t.Fatal("runner not alive")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	start := time.Now()
	e := nextEvent(t, ch)
	if e.Kind != "exit" || e.Code != -1 {
		t.Fatalf("after SIGKILL: %+v", e)
	}
	t.Logf("noticed after %s: %s", time.Since(start), e.Reason)
}

// TestNoUnsealedSessionWithoutUserNS: the local backend's runner started
// where user namespaces are forbidden (a seccomp filter answering
// clone(CLONE_NEWUSER) with EPERM, as a container's RuntimeDefault does)
// never runs a session unsealed. As root it needs no user namespace and
// seals as always (id_map none, no fallback); without root it cannot
// seal and the session ends before it starts. A spec that asks for
// isolation "pod" (which the gateway never writes for this backend) is
// refused by a root runner outright.
func TestNoUnsealedSessionWithoutUserNS(t *testing.T) {
	dir := t.TempDir()
	wrapper := dir + "/airlock-nouserns"
	script := fmt.Sprintf("#!/bin/sh\nexec %s nouserns EPERM %s \"$@\"\n", realtest.Probe(t), realtest.Binary(t))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Dir: dir + "/sessions", Exe: wrapper, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, id string, s []byte) backend.Event {
		t.Helper()
		ref, err := b.Start(t.Context(), backend.Job{ID: id, Spec: s})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := b.Watch(t.Context(), id, ref)
		if err != nil {
			t.Fatal(err)
		}
		e := nextEvent(t, ch)
		if e.Kind == "ready" {
			if err := b.Stop(t.Context(), id, ref); err != nil {
				t.Error(err)
			}
			for e := range ch {
				if e.Kind == "exit" {
					break
				}
			}
		}
		return e
	}
	t.Run("plain spec", func(t *testing.T) {
		id := fmt.Sprintf("nouserns-%d", time.Now().UnixNano()%1e6)
		e := run(t, id, spec(t, id))
		for _, w := range e.Warnings {
			if strings.Contains(w, "forbidden") {
				t.Errorf("a local session fell back: %q", w)
			}
		}
		switch {
		case os.Geteuid() == 0 && (e.Kind != "ready" || e.IDMap != "none"):
			t.Errorf("root: want a sealed session (ready, id_map none), got %+v", e)
		case os.Geteuid() != 0 && (e.Kind != "exit" || !strings.Contains(e.Reason, "start seal init")):
			t.Errorf("unprivileged: want the session refused, got %+v", e)
		}
	})
	t.Run("isolation pod in the spec", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("an unprivileged local gateway writes its runners' specs as the same user")
		}
		id := fmt.Sprintf("nouserns-pod-%d", time.Now().UnixNano()%1e6)
		var m map[string]any
		if err := json.Unmarshal(spec(t, id), &m); err != nil {
			t.Fatal(err)
		}
		m["isolation"] = "pod"
		s, _ := json.Marshal(m)
		e := run(t, id, s)
		if e.Kind != "exit" || !strings.Contains(e.Reason, "isolation pod: refused for a runner started as root") {
			t.Errorf("want the refusal, got %+v", e)
		}
	})
}
