// Package kubernetes runs each session as a pod. Launch makes three objects
// with the same name and labels: a Secret with the runner spec and the
// session's secrets, a NetworkPolicy that admits only the gateway and lets
// the pod reach only the gateway and the profile's egress list, and a Pod
// whose one container runs `airlock run --register`, reads the spec from the
// Secret's file and registers its connectors' ports with the gateway over
// HTTPS, as a Slurm job's runner does; with Config.Service a fourth, a
// ClusterIP Service with only the connectors' ports, through which the
// gateway then reaches them. The spec it hands the runner asks for
// isolation "pod" (runnerSpec): where the cluster forbids user namespaces,
// the runner relies on the pod and its policy instead of failing. One pod
// informer (a watch, not polling) turns the pods' status into the
// sessions' events, with Kubernetes' reasons.
package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
	"github.com/airlock-hpc/airlock/internal/registration"
)

// Config configures the Kubernetes backend.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty uses the pod's own
	// (in-cluster) credentials. Context picks one of its contexts; empty:
	// its current one.
	Kubeconfig, Context string
	// Namespace holds every session's objects. Required.
	Namespace string
	// Image contains airlock and the profiles' programs. Required unless
	// every profile names its own.
	Image string
	// Airlock is the airlock binary in the image. Default "airlock".
	Airlock string
	// ServiceAccount the pods run as; its token is never mounted.
	// Default: the namespace's default.
	ServiceAccount string
	// Prefix starts every object's name ("PREFIX-SESSIONID") and is the
	// value of the airlock.io/gateway label: gateways that share a
	// namespace need different ones. Default "airlock".
	Prefix string
	// GatewayCIDRs are the gateway's addresses as pods see them: the only
	// peers the NetworkPolicy admits, and where the runner registers.
	// Required.
	GatewayCIDRs []string
	// GatewayPort is the gateway's HTTPS port the runners register with.
	GatewayPort int
	// Egress is what every session's pod may reach besides the gateway
	// (see ParseEgress). Default: nothing.
	Egress []string
	// UID and GID run a pod whose owner has no account on the gateway's
	// machine (the pod never runs as root). Default 65534.
	UID, GID int64
	// GracePeriod is how long a stopped pod's runner has to tear the
	// session down. Default 30s.
	GracePeriod time.Duration
	// Profiles override the pod's options for one profile, by name.
	Profiles map[string]PodOptions
	// Resync is how often the informer replays every pod (a missed event
	// is repaired at the latest then). Default 10m.
	Resync time.Duration
	// Service gives each session a ClusterIP Service (see service) and
	// makes its endpoints the Service's address. Its connectors then
	// listen on fixed ports (ServicePortBase on), so the Service can name
	// them before the runner starts.
	Service bool
	// RESTConfig, when set, is used instead of Kubeconfig (tests).
	RESTConfig *rest.Config
	Logger     *slog.Logger
}

// PodOptions are a profile's own pod options.
type PodOptions struct {
	// Image and ServiceAccount replace the backend's.
	Image, ServiceAccount string
	// NodeSelector and Tolerations steer the pod to nodes.
	NodeSelector map[string]string
	Tolerations  []Toleration
	// Volumes are persistent volume claims to mount (the user's home).
	Volumes []Volume
	// RuntimeClass is the pod's runtimeClassName (gVisor, Kata).
	RuntimeClass string
	// WritableRoot lets the container write to its root file system;
	// false (the zero value, so any profile without options) keeps it
	// read-only.
	WritableRoot bool
	// Egress is added to the backend's egress list.
	Egress []string
}

// Toleration is one of a pod's tolerations, as Kubernetes spells it.
type Toleration struct{ Key, Operator, Value, Effect string }

// Volume mounts a persistent volume claim; {user} in Claim is the
// session's portal user (Job.User; Owner, the Unix account, may be shared
// by every user).
type Volume struct {
	Claim, MountPath, SubPath string
	ReadOnly                  bool
}

func (c *Config) grace() *int64 {
	g := int64(c.GracePeriod / time.Second)
	return &g
}

// Backend is the Kubernetes backend.
type Backend struct {
	cfg    Config
	log    *slog.Logger
	client k8s.Interface

	informerOnce sync.Once
	informer     cache.SharedIndexInformer
	synced       chan struct{}

	mu       sync.Mutex
	watchers map[string]*watcher // by session id
	// runnerExit is what runners reported when they ended, by session id.
	runnerExit map[string]string
	// stopped are the sessions Stop deleted: their pods' end is no
	// surprise.
	stopped map[string]bool
	closed  bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type watcher struct {
	id   string
	ch   chan backend.Event
	ctx  context.Context
	wake chan struct{}
	// gone is the pod's last state when the informer saw it deleted.
	gone *corev1.Pod
}

var _ backend.Remote = (*Backend)(nil)

// New checks cfg and makes the API client. It asks nothing of the API
// server yet.
func New(cfg Config) (*Backend, error) {
	cfg.Airlock = cmp.Or(cfg.Airlock, "airlock")
	cfg.Prefix = cmp.Or(cfg.Prefix, "airlock")
	cfg.UID = cmp.Or(cfg.UID, 65534)
	cfg.GID = cmp.Or(cfg.GID, 65534)
	cfg.GracePeriod = cmp.Or(cfg.GracePeriod, 30*time.Second)
	cfg.Resync = cmp.Or(cfg.Resync, 10*time.Minute)
	if cfg.Namespace == "" {
		return nil, errors.New("kubernetes backend: namespace is required")
	}
	if len(cfg.GatewayCIDRs) == 0 {
		return nil, errors.New("kubernetes backend: gateway_cidrs is required (the only peers the sessions' pods admit)")
	}
	if cfg.GatewayPort < 1 || cfg.GatewayPort > 65535 {
		return nil, fmt.Errorf("kubernetes backend: gateway port %d", cfg.GatewayPort)
	}
	for _, c := range cfg.GatewayCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return nil, fmt.Errorf("kubernetes backend: gateway_cidrs: %w", err)
		}
	}
	for _, e := range cfg.Egress {
		if _, err := ParseEgress(e); err != nil {
			return nil, fmt.Errorf("kubernetes backend: %w", err)
		}
	}
	for name, p := range cfg.Profiles {
		for _, e := range p.Egress {
			if _, err := ParseEgress(e); err != nil {
				return nil, fmt.Errorf("kubernetes backend: profile %s: %w", name, err)
			}
		}
	}
	rc := cfg.RESTConfig
	if rc == nil {
		var err error
		if rc, err = restConfig(cfg.Kubeconfig, cfg.Context); err != nil {
			return nil, fmt.Errorf("kubernetes backend: %w", err)
		}
	}
	client, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	return newWithClient(cfg, client), nil
}

func restConfig(kubeconfig, context string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}

func newWithClient(cfg Config, client k8s.Interface) *Backend {
	b := &Backend{
		cfg: cfg, client: client, synced: make(chan struct{}),
		log:      cmp.Or(cfg.Logger, slog.Default()).With("component", "backend", "backend", "kubernetes"),
		watchers: map[string]*watcher{}, runnerExit: map[string]string{}, stopped: map[string]bool{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// startInformer starts the pod informer on first use, so New asks
// nothing of the API server (a gateway checking its configuration, or
// one whose cluster is down, still starts).
func (b *Backend) startInformer() {
	b.informerOnce.Do(func() {
		// Only this gateway's pods, in its namespace: the informer's
		// memory and traffic grow with airlock's sessions, not the
		// cluster's pods.
		f := informers.NewSharedInformerFactoryWithOptions(b.client, b.cfg.Resync, informers.WithNamespace(b.cfg.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.LabelSelector = labels.SelectorFromSet(b.selector()).String()
			}))
		b.informer = f.Core().V1().Pods().Informer()
		// Managed fields are most of a pod's bytes and nothing here
		// reads them.
		_ = b.informer.SetTransform(func(obj any) (any, error) {
			if p, ok := obj.(*corev1.Pod); ok {
				p.ManagedFields = nil
			}
			return obj, nil
		})
		_, _ = b.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { b.changed(obj, false) },
			UpdateFunc: func(_, obj any) { b.changed(obj, false) },
			DeleteFunc: func(obj any) { b.changed(obj, true) },
		})
		b.wg.Add(2)
		go func() {
			defer b.wg.Done()
			b.informer.Run(b.ctx.Done())
		}()
		go func() {
			defer b.wg.Done()
			if cache.WaitForCacheSync(b.ctx.Done(), b.informer.HasSynced) {
				close(b.synced)
			}
		}()
	})
}

// Close stops the informer and ends every Watch. Pods keep running: a
// restarted gateway adopts them. It is safe to call twice.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}

// Name is "kubernetes".
func (b *Backend) Name() string { return "kubernetes" }

// Client is the backend's API client.
func (b *Backend) Client() k8s.Interface { return b.client }

// waitSynced starts the informer and waits for its first list.
func (b *Backend) waitSynced(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("the kubernetes backend is closed")
	}
	// Under the lock that Close sets closed with: its Wait cannot miss
	// the informer's goroutines.
	b.startInformer()
	b.mu.Unlock()
	select {
	case <-b.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the pod informer's first list: %w", ctx.Err())
	case <-b.ctx.Done():
		return errors.New("the kubernetes backend is closed")
	}
}

// owner is the uid and gid the pod runs as: the owner's account on the
// gateway's machine (the cluster shares its directory), or the configured
// ones. Never root.
func (b *Backend) owner(name string) (int64, int64, error) {
	uid, gid := b.cfg.UID, b.cfg.GID
	if name != "" {
		if u, err := user.Lookup(name); err == nil {
			if uid, err = strconv.ParseInt(u.Uid, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("account %s: uid %q", name, u.Uid)
			}
			if gid, err = strconv.ParseInt(u.Gid, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("account %s: gid %q", name, u.Gid)
			}
		}
	}
	if uid == 0 || gid == 0 {
		return 0, 0, errors.New("sessions do not run as root; set run_as or log in as a user")
	}
	return uid, gid, nil
}

// Start creates the session's NetworkPolicy (first, so the pod never runs
// unfenced), Secret and Pod, then makes the pod the other two's owner so
// the cluster's garbage collector removes them with it, and with
// Config.Service the Service, owned by the pod from the start. It returns
// "pod:NAME". On failure it deletes what it made.
func (b *Backend) Start(ctx context.Context, j backend.Job) (string, error) {
	uid, gid, err := b.owner(j.Owner)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", j.ID, err)
	}
	for _, v := range b.cfg.Profiles[j.Profile].Volumes {
		if strings.Contains(v.Claim, "{user}") && cmp.Or(j.User, j.Owner) == "" {
			return "", fmt.Errorf("start %s: claim %s names the user, and the session has none", j.ID, v.Claim)
		}
	}
	if cmp.Or(b.cfg.Profiles[j.Profile].Image, b.cfg.Image) == "" {
		return "", fmt.Errorf("start %s: no image for profile %s", j.ID, j.Profile)
	}
	pol, err := b.policy(j)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", j.ID, err)
	}
	if j.Spec, err = b.runnerSpec(j.Spec); err != nil {
		return "", fmt.Errorf("start %s: %w", j.ID, err)
	}
	ns := b.cfg.Namespace
	name := b.objectName(j.ID)
	undo := func() {
		// A fresh context: the launch's may be what ended.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := b.delete(ctx, name); err != nil {
			b.log.WarnContext(ctx, "could not remove a failed launch's objects; reconcile will", "session", j.ID, "error", err)
		}
	}
	if _, err := b.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("start %s: network policy: %w", j.ID, err)
	}
	if _, err := b.client.CoreV1().Secrets(ns).Create(ctx, b.secret(j), metav1.CreateOptions{}); err != nil {
		undo()
		return "", fmt.Errorf("start %s: secret: %w", j.ID, err)
	}
	pod, err := b.client.CoreV1().Pods(ns).Create(ctx, b.pod(j, uid, gid), metav1.CreateOptions{})
	if err != nil {
		undo()
		return "", fmt.Errorf("start %s: pod: %w", j.ID, err)
	}
	// Owner references: a merge patch adds them without rewriting
	// anything else (the Secret is immutable but its metadata is not).
	patch := fmt.Appendf(nil, `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":%q,"uid":%q}]}}`, pod.Name, pod.UID)
	if _, err := b.client.CoreV1().Secrets(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		b.log.WarnContext(ctx, "could not make the pod own its secret; the gateway's reconcile still removes it", "session", j.ID, "error", err)
	}
	if _, err := b.client.NetworkingV1().NetworkPolicies(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		b.log.WarnContext(ctx, "could not make the pod own its network policy; the gateway's reconcile still removes it", "session", j.ID, "error", err)
	}
	if b.cfg.Service {
		// After the pod, which owns it from the start; before the
		// runner can register, which needs its address.
		svc, err := b.service(j, pod)
		if err == nil {
			_, err = b.client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
		}
		if err != nil {
			undo()
			return "", fmt.Errorf("start %s: service: %w", j.ID, err)
		}
	}
	b.log.InfoContext(ctx, "pod created", "session", j.ID, "pod", name, "namespace", ns, "owner", j.Owner)
	return "pod:" + name, nil
}

// podName reads a "pod:NAME" reference, which must be the session's.
func (b *Backend) podName(id, ref string) (string, error) {
	name, ok := strings.CutPrefix(ref, "pod:")
	if !ok || name != b.objectName(id) {
		return "", fmt.Errorf("backend ref %q: want pod:%s", ref, b.objectName(id))
	}
	return name, nil
}

// Stop deletes the session's pod (its runner gets SIGTERM and the grace
// period to tear the session down), Secret, NetworkPolicy and Service. It is
// backend.ErrGone when none of them existed.
func (b *Backend) Stop(ctx context.Context, id, ref string) error {
	name, err := b.podName(id, ref)
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	b.mu.Lock()
	b.stopped[id] = true
	b.mu.Unlock()
	found, err := b.delete(ctx, name)
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	if !found {
		return fmt.Errorf("stop %s: %w", id, backend.ErrGone)
	}
	b.log.InfoContext(ctx, "pod deleted", "session", id, "pod", name)
	return nil
}

// delete removes the objects called name (pod, secret, policy and any
// service); found is whether any was there.
func (b *Backend) delete(ctx context.Context, name string) (found bool, err error) {
	ns := b.cfg.Namespace
	del := metav1.DeleteOptions{GracePeriodSeconds: b.cfg.grace()}
	var errs []error
	for _, f := range []func() error{
		func() error { return b.client.CoreV1().Pods(ns).Delete(ctx, name, del) },
		func() error { return b.client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}) },
		func() error {
			return b.client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{})
		},
		// Whatever Config.Service is now: a gateway that had it on may
		// have left some.
		func() error { return b.client.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}) },
	} {
		switch err := f(); {
		case err == nil:
			found = true
		case apierrors.IsNotFound(err):
		default:
			errs = append(errs, err)
		}
	}
	return found, errors.Join(errs...)
}

// Watch reports the pod's state as the informer sees it change, until
// the pod has ended or is gone.
func (b *Backend) Watch(ctx context.Context, id, ref string) (<-chan backend.Event, error) {
	if _, err := b.podName(id, ref); err != nil {
		return nil, fmt.Errorf("watch %s: %w", id, err)
	}
	if err := b.waitSynced(ctx); err != nil {
		return nil, fmt.Errorf("watch %s: %w", id, err)
	}
	w := &watcher{id: id, ch: make(chan backend.Event, 4), ctx: ctx, wake: make(chan struct{}, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("watch %s: the kubernetes backend is closed", id)
	}
	if old, ok := b.watchers[id]; ok && old.ctx.Err() == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("watch %s: already watched", id)
	}
	b.watchers[id] = w
	b.wg.Add(1)
	b.mu.Unlock()
	w.wake <- struct{}{}
	go b.follow(w)
	return w.ch, nil
}

// changed wakes the watcher of the pod's session; it reads the pod's
// latest state itself, so a burst of updates costs one event.
func (b *Backend) changed(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := pod.Labels[LabelSession]
	b.mu.Lock()
	w := b.watchers[id]
	if w != nil && deleted {
		w.gone = pod
	}
	b.mu.Unlock()
	if w != nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// follow sends w's session's events until the exit, w's end or Close.
func (b *Backend) follow(w *watcher) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		if b.watchers[w.id] == w {
			delete(b.watchers, w.id)
		}
		b.mu.Unlock()
		close(w.ch)
	}()
	key := b.cfg.Namespace + "/" + b.objectName(w.id)
	var last string
	for {
		select {
		case <-w.wake:
		case <-w.ctx.Done():
			return
		case <-b.ctx.Done():
			return
		}
		b.mu.Lock()
		r, stopped, gone := b.runnerExit[w.id], b.stopped[w.id], w.gone
		b.mu.Unlock()
		var e backend.Event
		obj, exists, _ := b.informer.GetStore().GetByKey(key)
		switch {
		case exists:
			e = podEvent(obj.(*corev1.Pod), r)
		case gone != nil:
			e = b.goneEvent(gone, r, stopped)
		default:
			// Not in the informer: just created and not seen yet, or long
			// gone. Only the API server's NotFound says which.
			pod, err := b.client.CoreV1().Pods(b.cfg.Namespace).Get(w.ctx, b.objectName(w.id), metav1.GetOptions{})
			switch {
			case err == nil:
				e = podEvent(pod, r)
			case apierrors.IsNotFound(err):
				e = b.goneEvent(nil, r, stopped)
			case w.ctx.Err() != nil:
				return
			default:
				b.log.Warn("could not read a session's pod; its state stays", "session", w.id, "error", err)
				continue
			}
		}
		if k := string(e.Kind) + "\x00" + e.Reason; k != last {
			select {
			case w.ch <- e:
			case <-w.ctx.Done():
				return
			case <-b.ctx.Done():
				return
			}
			last = k
		}
		if e.Kind == contract.EventExit {
			b.mu.Lock()
			delete(b.runnerExit, w.id)
			delete(b.stopped, w.id)
			b.mu.Unlock()
			return
		}
	}
}

// goneEvent is the exit of a session whose pod was deleted: its last
// state's reason when it had ended, the runner's, or who deleted it.
func (b *Backend) goneEvent(last *corev1.Pod, runnerExit string, stopped bool) backend.Event {
	if last != nil {
		if e := podEvent(last, runnerExit); e.Kind == contract.EventExit {
			return e
		}
	}
	switch {
	case runnerExit != "":
		return backend.Event{Kind: contract.EventExit, Reason: runnerExit}
	case stopped:
		return backend.Event{Kind: contract.EventExit, Reason: "stopped; the pod was deleted"}
	}
	return backend.Event{Kind: contract.EventExit, Reason: "the session's pod was deleted", Code: -1}
}

// Runners lists the sessions with any object of this gateway's (pod,
// secret, policy or service), so reconcile also removes what a crash
// between two creates left behind.
func (b *Backend) Runners(ctx context.Context) (map[string]string, error) {
	sel := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(b.selector()).String()}
	ns := b.cfg.Namespace
	out := map[string]string{}
	add := func(m metav1.ObjectMeta) {
		if id := m.Labels[LabelSession]; id != "" && m.Name == b.objectName(id) {
			out[id] = "pod:" + m.Name
		}
	}
	pods, err := b.client.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods.Items {
		// Ended pods too: their objects are still to be deleted.
		add(p.ObjectMeta)
	}
	secrets, err := b.client.CoreV1().Secrets(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	for _, s := range secrets.Items {
		add(s.ObjectMeta)
	}
	pols, err := b.client.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list network policies: %w", err)
	}
	for _, p := range pols.Items {
		add(p.ObjectMeta)
	}
	svcs, err := b.client.CoreV1().Services(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	for _, s := range svcs.Items {
		add(s.ObjectMeta)
	}
	return out, nil
}

// serviceEndpoints are the connectors' endpoints through the session's
// Service: its cluster IP and the port it has for each connector, which
// must be the port the runner reports (the Service was made for the
// ports the spec fixed).
func (b *Backend) serviceEndpoints(ctx context.Context, id, name string, ports map[string]int) (map[string]string, error) {
	svc, err := b.client.CoreV1().Services(b.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: session %s has no service", backend.ErrRefused, id)
	}
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", id, err)
	}
	ip := net.ParseIP(svc.Spec.ClusterIP)
	if svc.Labels[LabelSession] != id || svc.Labels[LabelGateway] != b.cfg.Prefix || ip == nil {
		return nil, fmt.Errorf("%w: service %s is not session %s's, or has no cluster IP", backend.ErrRefused, name, id)
	}
	eps := map[string]string{}
	for c, p := range ports {
		i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == c })
		if i < 0 || int(svc.Spec.Ports[i].TargetPort.IntVal) != p {
			return nil, fmt.Errorf("%w: connector %q on port %d is not a port of service %s", backend.ErrRefused, c, p, name)
		}
		eps[c] = net.JoinHostPort(ip.String(), strconv.Itoa(int(svc.Spec.Ports[i].Port)))
	}
	return eps, nil
}

// Register accepts a runner's registration only from its pod's IP, and
// makes the endpoints from that IP and the ports the runner reports.
func (b *Backend) Register(ctx context.Context, id, ref string, from net.IP, reg registration.Registration) (backend.Event, error) {
	name, err := b.podName(id, ref)
	if err != nil {
		return backend.Event{}, err
	}
	pod, err := b.client.CoreV1().Pods(b.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return backend.Event{}, fmt.Errorf("%w: session %s has no pod", backend.ErrRefused, id)
	}
	if err != nil {
		return backend.Event{}, fmt.Errorf("register %s: %w", id, err)
	}
	if pod.Labels[LabelSession] != id || pod.Labels[LabelGateway] != b.cfg.Prefix {
		return backend.Event{}, fmt.Errorf("%w: pod %s is not session %s's", backend.ErrRefused, name, id)
	}
	ip := net.ParseIP(pod.Status.PodIP)
	if ip == nil {
		return backend.Event{}, fmt.Errorf("%w: pod %s has no IP yet", backend.ErrRefused, name)
	}
	if !ip.Equal(from) {
		return backend.Event{}, fmt.Errorf("%w: it came from %s, but pod %s is %s", backend.ErrRefused, from, name, ip)
	}
	switch reg.Event {
	case contract.EventExit:
		b.mu.Lock()
		b.runnerExit[id] = reg.Reason
		w := b.watchers[id]
		b.mu.Unlock()
		if w != nil {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
		return backend.Event{}, nil
	case contract.EventReady:
		if pod.Status.Phase != corev1.PodRunning {
			return backend.Event{}, fmt.Errorf("%w: pod %s is %s", backend.ErrRefused, name, pod.Status.Phase)
		}
		if len(reg.Ports) == 0 || len(reg.Ports) > 16 {
			return backend.Event{}, fmt.Errorf("%w: %d ports", backend.ErrRefused, len(reg.Ports))
		}
		if len(reg.TLSSHA256) != 64 {
			return backend.Event{}, fmt.Errorf("%w: tls_sha256 must be 64 hex digits", backend.ErrRefused)
		}
		eps := map[string]string{}
		for c, p := range reg.Ports {
			if p < 1 || p > 65535 {
				return backend.Event{}, fmt.Errorf("%w: connector %q port %d", backend.ErrRefused, c, p)
			}
			eps[c] = net.JoinHostPort(ip.String(), strconv.Itoa(p))
		}
		if b.cfg.Service {
			if eps, err = b.serviceEndpoints(ctx, id, name, reg.Ports); err != nil {
				return backend.Event{}, err
			}
		}
		var warnings []string
		for _, w := range reg.Warnings[:min(len(reg.Warnings), registration.MaxWarnings)] {
			warnings = append(warnings, clip(w, 500))
		}
		return backend.Event{Kind: contract.EventReady, Endpoints: eps, TLSSHA256: strings.ToLower(reg.TLSSHA256), Node: pod.Spec.NodeName,
			Warnings: warnings}, nil
	}
	return backend.Event{}, fmt.Errorf("%w: event %q: want ready or exit", backend.ErrRefused, reg.Event)
}

// clip keeps at most n bytes of s, on a rune boundary: a runner's words
// are stored and shown, and it may be the workload's.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
