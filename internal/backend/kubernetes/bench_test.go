package kubernetes

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/airlock-hpc/airlock/internal/realtest/kubetest"
)

// BenchmarkLaunchToRunning: Start until the backend's informer sees the
// pod Running, through the real scheduler and kwok (no image pull, no
// container: this is the control plane's and the backend's share of a
// launch), without and with a Service per session (one more object to
// create).
func BenchmarkLaunchToRunning(b *testing.B) {
	c := kubetest.Start(b)
	for _, service := range []bool{false, true} {
		b.Run(map[bool]string{false: "pod-ip", true: "service"}[service], func(b *testing.B) {
			launchToRunning(b, c, service)
		})
	}
}

func launchToRunning(b *testing.B, c *kubetest.Cluster, service bool) {
	ns := c.Namespace(b)
	be := newBackendB(b, c, ns)
	be.cfg.Service = service
	ctx := context.Background()
	if err := be.waitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	// The session's events do not change when the pod goes from
	// scheduled to Running (both are "starting"), so the benchmark hears
	// of Running from the backend's own informer.
	var mu sync.Mutex
	want := map[string]chan struct{}{}
	// Scheduling (the API server, the real scheduler and the backend's
	// informer) is reported apart from kwok's simulated kubelet, whose
	// delay grows here from launch to launch.
	bound := map[string]time.Time{}
	var toNode time.Duration
	_, _ = be.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		p := obj.(*corev1.Pod)
		mu.Lock()
		defer mu.Unlock()
		if t, ok := bound[p.Name]; ok && p.Spec.NodeName != "" {
			toNode += time.Since(t)
			delete(bound, p.Name)
		}
		if p.Status.Phase != corev1.PodRunning {
			return
		}
		if ch := want[p.Name]; ch != nil {
			close(ch)
			delete(want, p.Name)
		}
	}})
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-bench%d", i)
		i++
		ch := make(chan struct{})
		mu.Lock()
		want[be.objectName(id)] = ch
		bound[be.objectName(id)] = time.Now()
		mu.Unlock()
		if _, err := be.Start(ctx, job(id, "")); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(2 * time.Minute):
			b.Fatalf("%s: not running after 2m", id)
		}
	}
	mu.Lock()
	b.ReportMetric(float64(toNode.Microseconds())/1000/float64(i), "ms-to-node/op")
	mu.Unlock()
}

func newBackendB(b *testing.B, c *kubetest.Cluster, ns string) *Backend {
	be, err := New(Config{RESTConfig: c.REST, Namespace: ns, Image: "registry.example.org/airlock:1",
		GatewayCIDRs: []string{gatewayCIDR}, GatewayPort: 8443, GracePeriod: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

// BenchmarkRestart1000: with 1,000 sessions' pods in the namespace, what
// a restarted gateway pays: the time until its informer has listed them
// and Runners has answered (reconcile's first step), and the heap the
// informer keeps.
func BenchmarkRestart1000(b *testing.B) {
	const n = 1000
	c := kubetest.Start(b)
	ns := c.Namespace(b)
	be := newBackendB(b, c, ns)
	ctx := context.Background()
	jobs := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				j := job(fmt.Sprintf("s-many%04d", i), "")
				j.CPUs, j.MemoryMB = 0, 0
				if _, err := be.Start(ctx, j); err != nil {
					errs <- err
				}
			}
		})
	}
	t0 := time.Now()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Logf("created %d sessions (pod, secret, policy each) in %s", n, time.Since(t0).Round(time.Millisecond))
	be.Close()
	var heap float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		nb := newBackendB(b, c, ns)
		if err := nb.waitSynced(ctx); err != nil {
			b.Fatal(err)
		}
		r, err := nb.Runners(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(r) != n {
			b.Fatalf("%d runners", len(r))
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/restart")
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / (1 << 20)
		if got := len(nb.informer.GetStore().List()); got != n {
			b.Fatalf("informer holds %d pods", got)
		}
		nb.Close()
	}
	b.ReportMetric(heap, "heap-MiB")
}
