package kubernetes

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest/kubetest"
)

// BenchmarkLaunchToRunning: Start until the backend's informer sees the
// pod Running, through the real scheduler and kwok (no image pull, no
// container: this is the control plane's and the backend's share of a
// launch).
func BenchmarkLaunchToRunning(b *testing.B) {
	c := kubetest.Start(b)
	ns := c.Namespace(b)
	be := newBackendB(b, c, ns)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("s-bench%d", i)
		i++
		ref, err := be.Start(ctx, job(id, ""))
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		ch, err := be.Watch(wctx, id, ref)
		if err != nil {
			b.Fatal(err)
		}
		key := ns + "/" + be.objectName(id)
		for running := false; !running; {
			select {
			case e, ok := <-ch:
				if !ok || e.Kind == contract.EventExit {
					b.Fatalf("%s: %+v", id, e)
				}
			case <-wctx.Done():
				b.Fatalf("%s: not running", id)
			}
			// Starting comes at scheduling; Running is the pod's next
			// change, which wakes the watcher again.
			if obj, ok, _ := be.informer.GetStore().GetByKey(key); ok && obj.(*corev1.Pod).Status.Phase == corev1.PodRunning {
				running = true
			}
		}
		cancel()
	}
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
