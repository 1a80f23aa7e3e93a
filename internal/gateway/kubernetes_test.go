package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/airlock-hpc/airlock/internal/backend"
	kubebackend "github.com/airlock-hpc/airlock/internal/backend/kubernetes"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/realtest/kubetest"
	"github.com/airlock-hpc/airlock/internal/store/postgres"
)

// kubeGateway starts a gateway whose sessions are pods on the real test
// control plane (kube-apiserver, kube-scheduler, kwok), in namespace ns.
// kwok runs no containers, so sessions get as far as starting on the
// node; what the runner in the pod would do is the Slurm tests' business.
func kubeGateway(t *testing.T, c *kubetest.Cluster, ns, stateDir string, port int, users ...string) (*testGateway, int) {
	t.Helper()
	return kubeGatewayWith(t, c, ns, stateDir, port, nil, users...)
}

// kubeGatewayWith is kubeGateway with mod applied to both configs.
func kubeGatewayWith(t *testing.T, c *kubetest.Cluster, ns, stateDir string, port int, mod func(*Config, *kubebackend.Config), users ...string) (*testGateway, int) {
	t.Helper()
	cfg := testConfig(t, stateDir, 50*time.Millisecond, slog.LevelWarn, users...)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	kcfg := kubebackend.Config{RESTConfig: c.REST, Namespace: ns, Image: "registry.example.org/airlock:1",
		GatewayCIDRs: []string{"127.0.0.1/32"}, GatewayPort: port, GracePeriod: time.Second, Logger: cfg.Logger}
	cfg.Profiles = []Profile{desktopProfile()}
	if mod != nil {
		mod(&cfg, &kcfg)
	}
	be, err := kubebackend.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	cfg.Backend = be
	cfg.ReconcileEvery = time.Second
	cfg.Limits.MaxLoad = 1e-9
	cfg.RegisterURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.readLoad = func() (float64, error) { return 1000, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	tg := &testGateway{t: t, g: g, url: fmt.Sprintf("https://127.0.0.1:%d", port), stateDir: stateDir, cancel: cancel, done: done, cfg: cfg}
	t.Cleanup(tg.stop)
	return tg, port
}

func kubeObjects(t *testing.T, c *kubetest.Cluster, ns, name string) (n int) {
	t.Helper()
	ctx := context.Background()
	for _, err := range []error{
		func() error { _, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); return err }(),
		func() error { _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); return err }(),
		func() error {
			_, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{})
			return err
		}(),
	} {
		switch {
		case err == nil:
			n++
		case !apierrors.IsNotFound(err):
			t.Fatal(err)
		}
	}
	return n
}

// TestKubernetesRestart: a session launched through the gateway becomes a
// pod that the scheduler and kwok start (the session is starting on the
// node); the gateway's registration secrets are in the Secret only. A
// restarted gateway re-adopts the running pod, deletes a ghost's objects
// (a session its store does not know), and stopping the session deletes
// its pod, Secret and policy.
func TestKubernetesRestart(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	dir := t.TempDir()
	tg, port := kubeGateway(t, c, ns, dir, 0, "alice")
	cl := tg.client().loginToken("alice")
	s := cl.start(map[string]any{"profile": "desktop"})
	cl.waitStateFor(s.ID, "starting", 60*time.Second)
	name := "airlock-" + s.ID
	if n := kubeObjects(t, c, ns, name); n != 3 {
		t.Fatalf("%d of pod, secret and policy", n)
	}
	ctx := context.Background()
	sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Data["AIRLOCK_REGISTER_TOKEN"]) == 0 || !strings.HasPrefix(string(sec.Data["AIRLOCK_GATEWAY_URL"]), "https://127.0.0.1:") {
		t.Errorf("the secret lacks the registration settings: keys %v", keys(sec.Data))
	}
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sec.Data {
		if len(v) >= 16 && strings.Contains(pod.String(), string(v)) {
			t.Errorf("the secret's %s is in the pod", k)
		}
	}
	tg.stop()

	// A ghost: objects of this gateway's prefix for a session nobody
	// launched here (a crash between creating them and storing the
	// session).
	ghost, err := kubebackend.New(kubebackend.Config{RESTConfig: c.REST, Namespace: ns, Image: "x", GatewayCIDRs: []string{"127.0.0.1/32"}, GatewayPort: port})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ghost.Start(ctx, backend.Job{ID: "s-ghost0000000", Spec: []byte("{}"), Profile: "desktop"}); err != nil {
		t.Fatal(err)
	}
	ghost.Close()

	tg2, _ := kubeGateway(t, c, ns, dir, port)
	if err := realtest.WaitFor(60*time.Second, func() error {
		if n := kubeObjects(t, c, ns, "airlock-s-ghost0000000"); n != 0 {
			return fmt.Errorf("%d ghost objects left", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cl2 := tg2.client().loginToken("alice")
	if got := cl2.waitStateFor(s.ID, "starting", 10*time.Second); got.State != "starting" {
		t.Fatalf("after the restart the session is %s", got.State)
	}
	if n := kubeObjects(t, c, ns, name); n != 3 {
		t.Fatalf("the adopted session has %d of its 3 objects", n)
	}
	cl2.do("DELETE", "/api/v1/sessions/"+s.ID, nil, nil)
	cl2.waitStateFor(s.ID, "ended", 60*time.Second)
	if err := realtest.WaitFor(60*time.Second, func() error {
		if n := kubeObjects(t, c, ns, name); n != 0 {
			return fmt.Errorf("%d objects left", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestKubernetesHomePerPortalUser attacks the {user} claim template where
// portal users share one Unix account (a gateway without root, which a
// Kubernetes gateway needs not be, or a run_as without {user}): alice's
// and bob's pods must not mount the same home volume. Seen failing: {user}
// was the shared account, so both pods claimed home-nobody.
func TestKubernetesHomePerPortalUser(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	tg, _ := kubeGatewayWith(t, c, ns, t.TempDir(), 0, func(cfg *Config, k *kubebackend.Config) {
		cfg.RunAs = "nobody" // every portal user's sessions run as one account
		k.Profiles = map[string]kubebackend.PodOptions{"desktop": {Volumes: []kubebackend.Volume{{Claim: "home-{user}", MountPath: "/home/me"}}}}
	}, "alice", "bob")
	claims := map[string]string{}
	for _, u := range []string{"alice", "bob"} {
		s := tg.client().loginToken(u).start(map[string]any{"profile": "desktop"})
		pod, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), "airlock-"+s.ID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				claims[u] = v.PersistentVolumeClaim.ClaimName
			}
		}
	}
	if claims["alice"] == "" || claims["alice"] == claims["bob"] {
		t.Errorf("claims %v: want one home per portal user", claims)
	}
	if claims["alice"] != "home-alice" {
		t.Errorf("alice's claim is %q, want home-alice", claims["alice"])
	}
}

// blackhole is a UNIX-socket proxy in front of PostgreSQL that can stop
// passing bytes without closing anything: a database that hangs (a
// network partition, a stuck server) rather than one that refuses.
type blackhole struct {
	dir  string
	hung chan struct{}
}

func newBlackhole(t *testing.T, pg *realtest.Postgres) *blackhole {
	t.Helper()
	b := &blackhole{dir: t.TempDir(), hung: make(chan struct{})}
	sock := fmt.Sprintf(".s.PGSQL.%d", pg.Port)
	ln, err := net.Listen("unix", filepath.Join(b.dir, sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-b.hung:
				return // swallowed, and nothing closed
			default:
			}
			if err != nil {
				dst.Close()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", filepath.Join(pg.Dir, sock))
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return b
}

// TestLeadLapsesWhenStoreHangs: a leader whose database hangs (no
// answer, no error) stops following runners within the lease's length,
// as one whose database refuses does (TestLeadLapsesWithoutStore): another
// gateway may take the lease at its expiry. Seen failing: the renewal
// waited on the hung statement for ever, and the runners stayed followed.
func TestLeadLapsesWhenStoreHangs(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	pg := realtest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	bh := newBlackhole(t, pg)
	dsn = strings.Replace(dsn, "host="+pg.Dir, "host="+bh.dir, 1)
	tg, _ := kubeGatewayWith(t, c, ns, t.TempDir(), 0, func(cfg *Config, _ *kubebackend.Config) {
		cfg.Store.Close()
		db, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cfg.Store = db
		cfg.LeaseTTL, cfg.LeaseHolder = 2*time.Second, "gw-hang"
	}, "alice")
	s := tg.client().loginToken("alice").start(map[string]any{"profile": "desktop"})
	if err := realtest.WaitFor(10*time.Second, func() error {
		tg.g.mu.Lock()
		defer tg.g.mu.Unlock()
		if tg.g.watching[s.ID] == nil {
			return fmt.Errorf("the session is not followed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(bh.hung)
	hung := time.Now()
	if err := realtest.WaitFor(2*time.Second, func() error {
		tg.g.mu.Lock()
		defer tg.g.mu.Unlock()
		if n := len(tg.g.watching); n > 0 {
			return fmt.Errorf("still following %d runners", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v %s after the database hung (lease 2s)", err, time.Since(hung).Round(time.Millisecond))
	}
	// The lease in the store is the last renewal's time plus 2s, 0.4s
	// after the lead this gateway gave itself: another gateway may take
	// it then, and must find the runners let go.
	expiry := time.Unix(0, tg.g.lease.until.Load()).Add(400 * time.Millisecond)
	if tg.g.lease.until.Load() != 0 && time.Now().After(expiry) {
		t.Errorf("runners let go %s after the lease expired", time.Since(expiry).Round(time.Millisecond))
	}
	t.Logf("stopped following %s after the database hung (lease 2s)", time.Since(hung).Round(time.Millisecond))
}
