package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/realtest"
	"github.com/airlock-hpc/airlock/internal/realtest/kubetest"
	"github.com/airlock-hpc/airlock/internal/registration"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the API server stored")

// TestMain stops the control plane and fails the package when a test
// leaves a goroutine behind (an informer or a watcher nobody stopped).
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	kubetest.Stop()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const gatewayCIDR = "10.0.0.5/32"

// nowhere is a profile whose pods no node takes: the scheduler says why,
// and nothing but the test writes their status.
const nowhere = "nowhere"

func newBackend(t *testing.T, c *kubetest.Cluster, ns string) *Backend {
	t.Helper()
	return newBackendWith(t, c, ns, nil)
}

// newBackendWith is newBackend with change applied to its Config first.
func newBackendWith(t *testing.T, c *kubetest.Cluster, ns string, change func(*Config)) *Backend {
	t.Helper()
	cfg := Config{
		RESTConfig: c.REST, Namespace: ns, Image: "registry.example.org/airlock:1", Airlock: "/usr/bin/airlock",
		ServiceAccount: "airlock-session", GatewayCIDRs: []string{gatewayCIDR}, GatewayPort: 8443,
		Egress: []string{"192.0.2.0/24:443", "[2001:db8::]/32:53/udp"}, GracePeriod: time.Second,
		Profiles: map[string]PodOptions{
			"desktop": {NodeSelector: map[string]string{kubetest.NodeLabel: "yes"}, RuntimeClass: "gvisor",
				Tolerations: []Toleration{{Key: "airlock", Operator: "Equal", Value: "sessions", Effect: "NoSchedule"}},
				Volumes:     []Volume{{Claim: "home-{user}", MountPath: "/home/alice"}},
				Egress:      []string{"198.51.100.10:5432"}, WritableRoot: true},
			nowhere: {NodeSelector: map[string]string{kubetest.NodeLabel: "no"}},
		},
	}
	if change != nil {
		change(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func job(id, profile string) backend.Job {
	return backend.Job{ID: id, Profile: profile, Owner: "alice@example.org", CPUs: 2, MemoryMB: 1024, Lifetime: time.Hour,
		Spec: []byte(`{"id":"` + id + `","marker":"SPEC-MARKER-` + id + `",` +
			`"connectors":[{"name":"console","kind":"vnc","target":"127.0.0.1:5901","listen":"tcp::0"},` +
			`{"name":"rdp","kind":"tls","target":"127.0.0.1:3389","listen":"tcp::0"}]}`),
		Env: map[string]string{"AIRLOCK_TICKET_KEY": "TICKET-KEY-" + id, registration.EnvToken: "REG-TOKEN-" + id}}
}

func start(t *testing.T, b *Backend, j backend.Job) string {
	t.Helper()
	ref, err := b.Start(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// next reads events until one satisfies ok, failing on an exit it did
// not want or the deadline.
func next(t *testing.T, ch <-chan backend.Event, timeout time.Duration, ok func(backend.Event) bool) backend.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, open := <-ch:
			if !open {
				t.Fatal("the watch ended")
			}
			t.Logf("event %s %q node %q code %d", e.Kind, e.Reason, e.Node, e.Code)
			if ok(e) {
				return e
			}
			if e.Kind == contract.EventExit {
				t.Fatalf("unexpected exit: %q", e.Reason)
			}
		case <-deadline:
			t.Fatalf("no wanted event after %s", timeout)
		}
	}
}

func watch(t *testing.T, b *Backend, id, ref string) <-chan backend.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := b.Watch(ctx, id, ref)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func running(t *testing.T, c *kubetest.Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	if err := realtest.WaitFor(60*time.Second, func() error {
		p, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod is %s, ip %q", p.Status.Phase, p.Status.PodIP)
		}
		pod = p
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return pod
}

// normalize drops what differs between runs, for the goldens.
func normalize(m *metav1.ObjectMeta) {
	m.UID, m.ResourceVersion, m.CreationTimestamp, m.ManagedFields, m.Generation = "", "", metav1.Time{}, nil, 0
	m.Namespace = "NAMESPACE"
	for i := range m.OwnerReferences {
		m.OwnerReferences[i].UID = "POD-UID"
	}
}

func golden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the API server stored (run with -update after checking):\n--- got\n%s", path, got)
	}
}

// TestLaunchObjects: Start makes the policy, secret and pod with the
// fields the design asks for, as the real API server stores them
// (defaults included): the goldens are reviewed by hand, and the checks
// below pin what must never change.
func TestLaunchObjects(t *testing.T) {
	c := kubetest.Start(t)
	for _, service := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "service"}[service], func(t *testing.T) {
			launchObjects(t, c, service)
		})
	}
}

// launchObjects is TestLaunchObjects with or without a Service: the
// goldens of the objects that differ get "-service".
func launchObjects(t *testing.T, c *kubetest.Cluster, service bool) {
	ns := c.Namespace(t)
	b := newBackendWith(t, c, ns, func(c *Config) { c.Service = service })
	ctx := context.Background()
	suffix := ""
	if service {
		suffix = "-service"
	}
	// The RuntimeClass admission plugin refuses a pod naming a class the
	// cluster lacks.
	if _, err := c.Client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "gvisor"}, Handler: "runsc"},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ref := start(t, b, job("s-golden", "desktop"))
	if ref != "pod:airlock-s-golden" {
		t.Fatalf("ref %q", ref)
	}
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "airlock-s-golden", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, "airlock-s-golden", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, "airlock-s-golden", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned := []metav1.ObjectMeta{sec.ObjectMeta, pol.ObjectMeta}
	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "airlock-s-golden", metav1.GetOptions{})
	switch {
	case !service && !apierrors.IsNotFound(err):
		t.Fatalf("a service without service: true: %v", err)
	case service && err != nil:
		t.Fatal(err)
	case service:
		owned = append(owned, svc.ObjectMeta)
	}
	for _, o := range owned {
		if len(o.OwnerReferences) != 1 || o.OwnerReferences[0].UID != pod.UID {
			t.Errorf("%s: owner references %+v, want the pod %s", o.Name, o.OwnerReferences, pod.UID)
		}
	}
	s := pod.Spec
	ctr := s.Containers[0]
	sc := ctr.SecurityContext
	switch {
	case s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken:
		t.Error("the service account token is mounted")
	case s.SecurityContext.RunAsNonRoot == nil || !*s.SecurityContext.RunAsNonRoot || *s.SecurityContext.RunAsUser == 0:
		t.Error("the pod may run as root")
	case s.SecurityContext.SeccompProfile == nil || s.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("no RuntimeDefault seccomp profile")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged == nil || *sc.Privileged:
		t.Error("privilege escalation allowed")
	case len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL":
		t.Error("capabilities kept")
	case s.HostNetwork || s.HostPID || s.HostIPC:
		t.Error("host namespaces shared")
	case s.Tolerations == nil || s.RuntimeClassName == nil || s.NodeSelector[kubetest.NodeLabel] != "yes":
		t.Error("the profile's overrides are missing")
	case pod.Labels[LabelSession] != "s-golden" || pod.Labels[LabelOwner] != "alice_example.org" || pod.Annotations[AnnotationOwner] != "alice@example.org":
		t.Errorf("labels %v annotations %v", pod.Labels, pod.Annotations)
	}
	// The runner's spec: isolation "pod" (only this backend sets it) and
	// the connectors on the Service's ports; the rest as the gateway wrote it.
	var spec struct {
		Isolation  string `json:"isolation"`
		Marker     string `json:"marker"`
		Connectors []struct{ Name, Listen string }
	}
	if err := json.Unmarshal(sec.Data[specKey], &spec); err != nil {
		t.Fatal(err)
	}
	listen := []string{"tcp::0", "tcp::0"}
	if service {
		listen = []string{"tcp::7400", "tcp::7401"}
	}
	if spec.Isolation != string(contract.IsolationPod) || spec.Marker != "SPEC-MARKER-s-golden" || len(spec.Connectors) != 2 ||
		spec.Connectors[0].Listen != listen[0] || spec.Connectors[1].Listen != listen[1] {
		t.Errorf("runner spec %s", sec.Data[specKey])
	}
	// The policy admits the gateway to any TCP port (the runner picks
	// them), or to the connectors' fixed ports only.
	if ports := pol.Spec.Ingress[0].Ports; len(ports) != map[bool]int{false: 1, true: 2}[service] ||
		!service && ports[0].Port != nil || service && (ports[0].Port.IntVal != 7400 || ports[1].Port.IntVal != 7401) {
		t.Errorf("ingress ports %+v", ports)
	}
	// The Service: ClusterIP, the session's pod only, the connectors'
	// ports only.
	if service && (svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ClusterIP == "" || len(svc.Spec.Ports) != 2 ||
		svc.Spec.Selector[LabelSession] != "s-golden" || svc.Spec.Selector[LabelGateway] != "airlock") {
		t.Errorf("service %+v", svc.Spec)
	}
	pod.Spec.NodeName = "" // the scheduler's, maybe not yet
	pod.Status = corev1.PodStatus{}
	normalize(&pod.ObjectMeta)
	normalize(&sec.ObjectMeta)
	normalize(&pol.ObjectMeta)
	golden(t, "pod", pod)
	golden(t, "secret"+suffix, sec)
	golden(t, "networkpolicy"+suffix, pol)
	if service {
		// The cluster's choice of address, different every run.
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "CLUSTER-IP", []string{"CLUSTER-IP"}
		normalize(&svc.ObjectMeta)
		golden(t, "service", svc)
	}
}

// TestSecretsOnlyInTheSecret: the spec and the session's secrets (ticket
// key, registration token) are in the Secret and nowhere in the pod, its
// status or the namespace's events, while the pod is scheduled and runs.
func TestSecretsOnlyInTheSecret(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackend(t, c, ns)
	ctx := context.Background()
	j := job("s-secret", "")
	start(t, b, j)
	pod := running(t, c, ns, "airlock-s-secret")
	sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, "airlock-s-secret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) == 0 {
		t.Log("no events in the namespace (kwok records none); checked the pod only")
	}
	podJSON, _ := json.Marshal(pod)
	eventsJSON, _ := json.Marshal(events)
	for _, m := range []string{"SPEC-MARKER-s-secret", "TICKET-KEY-s-secret", "REG-TOKEN-s-secret"} {
		if bytes.Contains(podJSON, []byte(m)) {
			t.Errorf("%s is in the pod:\n%s", m, podJSON)
		}
		if bytes.Contains(eventsJSON, []byte(m)) {
			t.Errorf("%s is in an event", m)
		}
		found := false
		for _, v := range sec.Data {
			found = found || bytes.Contains(v, []byte(m))
		}
		if !found {
			t.Errorf("%s is not in the secret: the test proves nothing", m)
		}
	}
}

// TestRunningAndRegister: through the scheduler and kwok the session goes
// queued/starting on the node; only its pod's IP may register it, and
// the endpoints are that IP's.
func TestRunningAndRegister(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackend(t, c, ns)
	ctx := context.Background()
	ref := start(t, b, job("s-run", ""))
	ch := watch(t, b, "s-run", ref)
	next(t, ch, 60*time.Second, func(e backend.Event) bool {
		return e.Kind == contract.EventStarting && e.Node == kubetest.NodeName
	})
	pod := running(t, c, ns, "airlock-s-run")
	ip := net.ParseIP(pod.Status.PodIP)
	sha := strings.Repeat("ab", 32)
	reg := registration.Registration{Event: contract.EventReady, Ports: map[string]int{"console": 7000}, TLSSHA256: sha}
	// Attacks: another address (a neighbour pod, the network), and this
	// pod claiming another session.
	if _, err := b.Register(ctx, "s-run", ref, net.ParseIP("10.244.9.9"), reg); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("registration from another address: %v", err)
	}
	ref2 := start(t, b, job("s-other", nowhere))
	if _, err := b.Register(ctx, "s-other", ref2, ip, reg); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("a pod registering another session: %v", err)
	}
	if _, err := b.Register(ctx, "s-other", ref, ip, reg); err == nil {
		t.Error("another session's ref accepted")
	}
	e, err := b.Register(ctx, "s-run", ref, ip, reg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != contract.EventReady || e.Endpoints["console"] != net.JoinHostPort(ip.String(), "7000") || e.Node != kubetest.NodeName {
		t.Errorf("ready %+v", e)
	}
}

// TestUnschedulable: a pod no node can take stays queued with the
// scheduler's own explanation.
func TestUnschedulable(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackend(t, c, ns)
	ref := start(t, b, job("s-nowhere", nowhere))
	ch := watch(t, b, "s-nowhere", ref)
	e := next(t, ch, 60*time.Second, func(e backend.Event) bool {
		return e.Kind == contract.EventQueued && strings.Contains(e.Reason, "Unschedulable")
	})
	if !strings.Contains(e.Reason, "node affinity/selector") {
		t.Errorf("reason %q does not say which rule no node met", e.Reason)
	}
}

// TestReasons: what a kubelet reports (here written to the pod's status
// through the real API, as a kubelet does) reaches the session through
// the informer with Kubernetes' reason: ImagePullBackOff while starting,
// then OOMKilled, Evicted and DeadlineExceeded as the exit.
func TestReasons(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackend(t, c, ns)
	ctx := context.Background()
	pods := c.Client.CoreV1().Pods(ns)
	// Bind to a node nobody runs, so only the test writes the status.
	bind := func(name string) {
		t.Helper()
		if err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name},
			Target: corev1.ObjectReference{Kind: "Node", Name: "ghost-node"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setStatus := func(name string, f func(*corev1.PodStatus)) {
		t.Helper()
		if err := realtest.WaitFor(10*time.Second, func() error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			f(&p.Status)
			_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id     string
		status func(*corev1.PodStatus)
		kind   contract.EventKind
		reason string
		code   int
	}{
		{"s-pull", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodPending
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: container, Image: "x", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
		}, contract.EventStarting, "ImagePullBackOff: Back-off pulling image", 0},
		{"s-oom", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: container, Image: "x", State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}}}
		}, contract.EventExit, "OOMKilled (exit code 137)", 137},
		{"s-evicted", func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
		}, contract.EventExit, "Evicted: The node was low on resource: memory.", -1},
		{"s-deadline", func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
		}, contract.EventExit, "DeadlineExceeded: Pod was active on the node longer than the specified deadline", -1},
	} {
		t.Run(tc.id, func(t *testing.T) {
			ref := start(t, b, job(tc.id, nowhere))
			ch := watch(t, b, tc.id, ref)
			next(t, ch, 30*time.Second, func(e backend.Event) bool { return e.Kind == contract.EventQueued })
			bind(b.objectName(tc.id))
			next(t, ch, 30*time.Second, func(e backend.Event) bool { return e.Kind == contract.EventStarting && e.Node == "ghost-node" })
			setStatus(b.objectName(tc.id), tc.status)
			e := next(t, ch, 30*time.Second, func(e backend.Event) bool { return e.Kind == tc.kind && e.Reason != "" })
			if e.Reason != tc.reason || e.Code != tc.code {
				t.Errorf("got %q code %d, want %q code %d", e.Reason, e.Code, tc.reason, tc.code)
			}
		})
	}
}

func gone(c *kubetest.Cluster, ns, name string) error {
	ctx := context.Background()
	var left []string
	if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("pod (%v)", err))
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("secret (%v)", err))
	}
	if _, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("network policy (%v)", err))
	}
	if _, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("service (%v)", err))
	}
	if len(left) > 0 {
		return fmt.Errorf("%s left: %s", name, strings.Join(left, ", "))
	}
	return nil
}

// TestStopDeletesEverything: Stop removes pod, secret, policy and
// Service, the watch ends with "stopped", and a second Stop says the
// runner is gone.
func TestStopDeletesEverything(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackendWith(t, c, ns, func(c *Config) { c.Service = true })
	ctx := context.Background()
	ref := start(t, b, job("s-stop", ""))
	if _, err := c.Client.CoreV1().Services(ns).Get(ctx, "airlock-s-stop", metav1.GetOptions{}); err != nil {
		t.Fatalf("no service to delete: %v", err)
	}
	ch := watch(t, b, "s-stop", ref)
	next(t, ch, 60*time.Second, func(e backend.Event) bool { return e.Kind == contract.EventStarting && e.Node != "" })
	running(t, c, ns, "airlock-s-stop")
	if err := b.Stop(ctx, "s-stop", ref); err != nil {
		t.Fatal(err)
	}
	e := next(t, ch, 60*time.Second, func(e backend.Event) bool { return e.Kind == contract.EventExit })
	if !strings.HasPrefix(e.Reason, "stopped") || e.Code != 0 {
		t.Errorf("exit %q code %d", e.Reason, e.Code)
	}
	if _, open := <-ch; open {
		t.Error("the watch goes on after the exit")
	}
	if err := realtest.WaitFor(60*time.Second, func() error { return gone(c, ns, "airlock-s-stop") }); err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(ctx, "s-stop", ref); !errors.Is(err, backend.ErrGone) {
		t.Errorf("second stop: %v", err)
	}
	if err := b.Stop(ctx, "s-stop", "pod:airlock-s-other"); err == nil {
		t.Error("stop with another session's ref accepted")
	}
}

// TestRestart: a new backend (a restarted gateway) lists every session
// that has any object left, adopts a running pod (its watch picks up
// where it is, no exit), and Stop clears what a crash half-way through a
// launch left (a secret, policy and Service without a pod; without a
// garbage collector in the test's cluster, the owner reference alone
// removes nothing).
func TestRestart(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	withService := func(c *Config) { c.Service = true }
	first := newBackendWith(t, c, ns, withService)
	refLive := start(t, first, job("s-live", ""))
	refOrphan := start(t, first, job("s-orphan", ""))
	running(t, c, ns, "airlock-s-live")
	// The crash: the orphan's pod is gone, its secret and policy not.
	zero := int64(0)
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "airlock-s-orphan", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Services(ns).Get(ctx, "airlock-s-orphan", metav1.GetOptions{}); err != nil {
		t.Fatalf("the orphan has no service: the test proves less: %v", err)
	}
	first.Close()

	b := newBackendWith(t, c, ns, withService)
	got, err := b.Runners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["s-live"] != refLive || got["s-orphan"] != refOrphan {
		t.Fatalf("runners %v", got)
	}
	// Another gateway's sessions in the namespace are not ours.
	other, err := New(Config{RESTConfig: c.REST, Namespace: ns, Image: "x", Prefix: "other", GatewayCIDRs: []string{gatewayCIDR}, GatewayPort: 8443})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if r, err := other.Runners(ctx); err != nil || len(r) != 0 {
		t.Errorf("another prefix's runners: %v %v", r, err)
	}
	ch := watch(t, b, "s-live", refLive)
	next(t, ch, 30*time.Second, func(e backend.Event) bool { return e.Kind == contract.EventStarting && e.Node == kubetest.NodeName })
	// The gateway stops runners no active session owns (gateway.reconcile).
	if err := b.Stop(ctx, "s-orphan", refOrphan); err != nil {
		t.Fatal(err)
	}
	if err := realtest.WaitFor(30*time.Second, func() error { return gone(c, ns, "airlock-s-orphan") }); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Runners(ctx); err != nil || len(got) != 1 {
		t.Errorf("runners after reconcile %v %v", got, err)
	}
	select {
	case e := <-ch:
		t.Errorf("the adopted session got %+v", e)
	default:
	}
}

// TestRegisterThroughService: with a Service per session the endpoints
// are its cluster IP and ports, registered still only from the pod's IP;
// a port the Service does not have (the runner's claim, not the spec's
// fixed one) is refused, and so is a session whose Service is gone.
func TestRegisterThroughService(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	b := newBackendWith(t, c, ns, func(c *Config) { c.Service = true })
	ctx := context.Background()
	ref := start(t, b, job("s-svc", ""))
	pod := running(t, c, ns, "airlock-s-svc")
	ip := net.ParseIP(pod.Status.PodIP)
	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "airlock-s-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	good := registration.Registration{Event: contract.EventReady, Ports: map[string]int{"console": 7400, "rdp": 7401}, TLSSHA256: sha}
	if _, err := b.Register(ctx, "s-svc", ref, net.ParseIP("10.244.9.9"), good); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("registration from another address: %v", err)
	}
	bad := registration.Registration{Event: contract.EventReady, Ports: map[string]int{"console": 7000}, TLSSHA256: sha}
	if _, err := b.Register(ctx, "s-svc", ref, ip, bad); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("a port the service lacks: %v", err)
	}
	swapped := registration.Registration{Event: contract.EventReady, Ports: map[string]int{"console": 7401}, TLSSHA256: sha}
	if _, err := b.Register(ctx, "s-svc", ref, ip, swapped); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("another connector's port: %v", err)
	}
	// The runner's fallback to the pod's isolation reaches the gateway
	// with the registration, bounded.
	fallback := "user namespaces forbidden by the cluster (operation not permitted); isolation is the pod's network namespace and its NetworkPolicy"
	good.Warnings = append([]string{fallback, strings.Repeat("é", 400)}, make([]string, 30)...)
	e, err := b.Register(ctx, "s-svc", ref, ip, good)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Warnings) != registration.MaxWarnings || e.Warnings[0] != fallback || len(e.Warnings[1]) != 500 {
		t.Errorf("warnings: %d, first %q, second %d bytes", len(e.Warnings), e.Warnings[0], len(e.Warnings[1]))
	}
	want := map[string]string{"console": net.JoinHostPort(svc.Spec.ClusterIP, "7400"), "rdp": net.JoinHostPort(svc.Spec.ClusterIP, "7401")}
	if e.Kind != contract.EventReady || len(e.Endpoints) != 2 || e.Endpoints["console"] != want["console"] || e.Endpoints["rdp"] != want["rdp"] {
		t.Errorf("ready %+v, want endpoints %v", e, want)
	}
	if err := c.Client.CoreV1().Services(ns).Delete(ctx, "airlock-s-svc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Register(ctx, "s-svc", ref, ip, good); !errors.Is(err, backend.ErrRefused) {
		t.Errorf("registration without the service: %v", err)
	}
}
