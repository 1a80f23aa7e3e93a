package kubernetes

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/backend/kubernetes/egress"
	"github.com/airlock-hpc/airlock/internal/contract"
)

// The labels on every object the backend makes. The gateway label lets
// gateways share a namespace: each reconciles only its own objects.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelGateway   = "airlock.io/gateway"
	LabelSession   = "airlock.io/session"
	LabelOwner     = "airlock.io/owner"
	LabelProfile   = "airlock.io/profile"
	// AnnotationOwner is the owner's account as it is: a label value
	// cannot hold every account name (an e-mail address).
	AnnotationOwner = "airlock.io/owner"
	managedBy       = "airlock"
)

// specKey is the runner spec's key in the session's Secret, and the file
// it becomes in the pod.
const (
	specKey   = "spec.json"
	specDir   = "/run/airlock/spec"
	container = "runner"
)

// Names are the objects one session uses; all three share the name.
func (b *Backend) objectName(id string) string { return b.cfg.Prefix + "-" + id }

// labels are the session's objects' labels.
func (b *Backend) labels(j backend.Job) map[string]string {
	l := b.selector()
	l[LabelSession] = j.ID
	if v := labelValue(j.Owner); v != "" {
		l[LabelOwner] = v
	}
	if v := labelValue(j.Profile); v != "" {
		l[LabelProfile] = v
	}
	return l
}

// selector matches every object this gateway made.
func (b *Backend) selector() map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelGateway: b.cfg.Prefix}
}

var labelBad = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// labelValue makes s a valid label value (63 characters of A-Z, a-z, 0-9,
// '-', '_' and '.', alphanumeric at both ends); the exact value goes in an
// annotation.
func labelValue(s string) string {
	s = labelBad.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-_.")
}

var (
	dnsBad = regexp.MustCompile(`[^a-z0-9-]+`)
	// dnsSafe is a name dnsName keeps as it is: already a DNS label, and
	// not ending the way dnsName's digest ends a name it changed.
	dnsSafe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	dnsDigest = regexp.MustCompile(`-[0-9a-f]{16}$`)
)

// dnsName makes an account name fit an object's name ({user} in a claim,
// so one user's home volume). It must tell every two accounts apart:
// "alice.smith" and "alice-smith", or "Bob" and "bob", are two users, and
// lowering and replacing alone would give both the same claim. A name
// that is a DNS label already stays as it is; any other is lowered, has
// anything but a-z, 0-9 and '-' replaced by '-', and gets 16 hex digits of
// the SHA-256 of the exact name ("Alice.Smith@example.org" is
// "alice-smith-example-org-" and the digest). A plain name that happens
// to end like a digest gets one too, so it cannot take a changed name's.
func dnsName(s string) string {
	if dnsSafe.MatchString(s) && !dnsDigest.MatchString(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	base := strings.Trim(dnsBad.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	if base == "" {
		base = "u" // so not a plain name of 16 hex digits
	}
	return base + "-" + hex.EncodeToString(sum[:8])
}

// secret holds what the runner must read but nobody may see in the pod's
// spec: the runner spec and the session's secrets (ticket key,
// registration token). It is immutable: nothing rewrites a session's spec.
func (b *Backend) secret(j backend.Job) *corev1.Secret {
	data := map[string][]byte{specKey: j.Spec}
	for k, v := range j.Env {
		data[k] = []byte(v)
	}
	yes := true
	return &corev1.Secret{
		ObjectMeta: b.meta(j),
		Type:       corev1.SecretTypeOpaque,
		Immutable:  &yes,
		Data:       data,
	}
}

func (b *Backend) meta(j backend.Job) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: b.objectName(j.ID), Namespace: b.cfg.Namespace,
		Labels: b.labels(j), Annotations: map[string]string{AnnotationOwner: j.Owner},
	}
}

// pod runs `airlock run --register` with the spec from the Secret's file
// and the secrets in environment variables that name the Secret's keys, so
// neither is in any field of the pod itself. uid and gid are the owner's.
func (b *Backend) pod(j backend.Job, uid, gid int64) *corev1.Pod {
	p := b.cfg.Profiles[j.Profile]
	no, yes := false, true
	readOnly := !p.WritableRoot
	name := b.objectName(j.ID)
	var env []corev1.EnvVar
	for _, k := range slices.Sorted(maps.Keys(j.Env)) {
		env = append(env, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: k},
		}})
	}
	env = append(env, corev1.EnvVar{Name: "HOME", Value: "/tmp"})
	mode := int32(0o440) // group-readable: fsGroup makes the owner's group the files' group
	vols := []corev1.Volume{
		{Name: "spec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: name, DefaultMode: &mode, Items: []corev1.KeyToPath{{Key: specKey, Path: specKey}},
		}}},
		// The runner's scratch (the seal's tmp, the session's
		// certificate) with a read-only root.
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "spec", MountPath: specDir, ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
	}
	for i, v := range p.Volumes {
		vn := "volume-" + strconv.Itoa(i)
		vols = append(vols, corev1.Volume{Name: vn, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: strings.ReplaceAll(v.Claim, "{user}", dnsName(cmp.Or(j.User, j.Owner))), ReadOnly: v.ReadOnly},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: vn, MountPath: v.MountPath, ReadOnly: v.ReadOnly, SubPath: v.SubPath})
	}
	var tol []corev1.Toleration
	for _, t := range p.Tolerations {
		tol = append(tol, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator), Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	res := corev1.ResourceRequirements{}
	if j.CPUs > 0 || j.MemoryMB > 0 {
		// Requests equal limits: the session gets what it was granted,
		// and the pod is Guaranteed (evicted last).
		rl := corev1.ResourceList{}
		if j.CPUs > 0 {
			rl[corev1.ResourceCPU] = *resource.NewQuantity(int64(j.CPUs), resource.DecimalSI)
		}
		if j.MemoryMB > 0 {
			rl[corev1.ResourceMemory] = *resource.NewQuantity(int64(j.MemoryMB)<<20, resource.BinarySI)
		}
		res.Requests, res.Limits = rl, rl.DeepCopy()
	}
	var deadline *int64
	if j.Lifetime > 0 {
		// The cluster ends a session the gateway forgot (DeadlineExceeded).
		d := int64(j.Lifetime.Seconds()) + 60
		deadline = &d
	}
	var rc *string
	if p.RuntimeClass != "" {
		rc = &p.RuntimeClass
	}
	pod := &corev1.Pod{
		ObjectMeta: b.meta(j),
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ServiceAccountName:            cmp.Or(p.ServiceAccount, b.cfg.ServiceAccount),
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			ActiveDeadlineSeconds:         deadline,
			TerminationGracePeriodSeconds: b.cfg.grace(),
			NodeSelector:                  p.NodeSelector,
			Tolerations:                   tol,
			RuntimeClassName:              rc,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &gid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: vols,
			Containers: []corev1.Container{{
				Name:            container,
				Image:           cmp.Or(p.Image, b.cfg.Image),
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{b.cfg.Airlock, "run", "--register", "--log-format", "json", "--spec", specDir + "/" + specKey},
				Env:             env,
				Resources:       res,
				VolumeMounts:    mounts,
				SecurityContext: &corev1.SecurityContext{
					Privileged: &no, AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &readOnly,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				// Not FallbackToLogsOnError: the runner's log must not land in
				// the pod's status, which more people read than the log.
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			}},
		},
	}
	return pod
}

// policy admits only the gateway, to any TCP port (the connectors' ports
// are the runner's choice; nothing else in the pod listens) or, with a
// Service, to the connectors' fixed ports only (a workload that shares
// the pod's network namespace, where the cluster forbids user
// namespaces, can listen too), and lets the pod reach only the gateway's
// registration port and the profile's egress list.
func (b *Backend) policy(j backend.Job) (*networkingv1.NetworkPolicy, error) {
	tcp := corev1.ProtocolTCP
	in := []networkingv1.NetworkPolicyPort{{Protocol: &tcp}}
	if b.cfg.Service {
		_, ports, err := connectorPorts(j.Spec)
		if err != nil {
			return nil, err
		}
		if len(ports) == 0 {
			// A rule with no ports would admit every port.
			return nil, errors.New("spec: no connectors for the Service")
		}
		in = nil
		for _, p := range ports {
			port := intstr.FromInt32(p)
			in = append(in, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
		}
	}
	var from []networkingv1.NetworkPolicyPeer
	for _, c := range b.cfg.GatewayCIDRs {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	gwPort := intstr.FromInt32(int32(b.cfg.GatewayPort))
	egress := []networkingv1.NetworkPolicyEgressRule{{
		To: from, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &gwPort}},
	}}
	list := append(slices.Clip(b.cfg.Egress), b.cfg.Profiles[j.Profile].Egress...)
	for _, s := range list {
		r, err := ParseEgress(s)
		if err != nil {
			return nil, err
		}
		egress = append(egress, r)
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: b.meta(j),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: b.podSelector(j.ID)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: in}},
			Egress:      egress,
		},
	}, nil
}

// ParseEgress reads one egress entry (see egress.Parse) as a policy rule.
func ParseEgress(s string) (networkingv1.NetworkPolicyEgressRule, error) {
	r, err := egress.Parse(s)
	if err != nil {
		return networkingv1.NetworkPolicyEgressRule{}, err
	}
	rule := networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: r.CIDR}}}}
	if r.Port == 0 {
		return rule, nil
	}
	proto := corev1.Protocol(r.Protocol)
	port := intstr.FromInt32(r.Port)
	np := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
	if r.EndPort != 0 {
		np.EndPort = &r.EndPort
	}
	rule.Ports = []networkingv1.NetworkPolicyPort{np}
	return rule, nil
}

// ServicePortBase is the port a session's first connector listens on
// when the backend gives sessions a Service (Config.Service); the next
// ones follow in the spec's order. Each pod has its own network
// namespace, so fixed ports collide with nothing but the pod's own.
const ServicePortBase = 7400

// runnerSpec is the job's spec as the pod's runner gets it: isolation
// "pod" (where the cluster forbids user namespaces the runner relies on
// the pod and its NetworkPolicy, and says so; see contract.IsolationPod)
// and, with a Service, each TCP connector on its fixed port. Only this
// backend sets the isolation: the gateway's spec builder never does, and
// the local and Slurm backends pass the spec on as it is. Every other
// key is kept as the gateway wrote it.
func (b *Backend) runnerSpec(spec []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(spec, &m); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	m["isolation"], _ = json.Marshal(contract.IsolationPod)
	if b.cfg.Service && m["connectors"] != nil {
		var conns []map[string]json.RawMessage
		if err := json.Unmarshal(m["connectors"], &conns); err != nil {
			return nil, fmt.Errorf("spec: connectors: %w", err)
		}
		for i, c := range conns {
			var listen string
			if err := json.Unmarshal(c["listen"], &listen); err != nil || !strings.HasPrefix(listen, "tcp:") {
				return nil, fmt.Errorf("spec: connectors[%d]: listen %q: a Service needs TCP", i, listen)
			}
			c["listen"], _ = json.Marshal("tcp::" + strconv.Itoa(ServicePortBase+i))
		}
		m["connectors"], _ = json.Marshal(conns)
	}
	return json.Marshal(m)
}

// connectorPorts are the spec's connectors' names and fixed ports, in
// order, as runnerSpec assigns them.
func connectorPorts(spec []byte) ([]string, []int32, error) {
	var s struct {
		Connectors []struct {
			Name string `json:"name"`
		} `json:"connectors"`
	}
	if err := json.Unmarshal(spec, &s); err != nil {
		return nil, nil, fmt.Errorf("spec: %w", err)
	}
	var names []string
	var ports []int32
	for i, c := range s.Connectors {
		names = append(names, c.Name)
		ports = append(ports, int32(ServicePortBase+i))
	}
	return names, ports, nil
}

// service is the session's ClusterIP Service: only the connectors' ports
// (by name, the Service port the pod's), selecting the session's pod by
// the labels the policy selects it by. No other pod can carry them: only
// the gateway creates pods with its labels.
func (b *Backend) service(j backend.Job, pod *corev1.Pod) (*corev1.Service, error) {
	names, ports, err := connectorPorts(j.Spec)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, errors.New("spec: no connectors for the Service")
	}
	var sp []corev1.ServicePort
	for i, n := range names {
		sp = append(sp, corev1.ServicePort{Name: n, Protocol: corev1.ProtocolTCP, Port: ports[i], TargetPort: intstr.FromInt32(ports[i])})
	}
	meta := b.meta(j)
	meta.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}}
	return &corev1.Service{
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: b.podSelector(j.ID),
			Ports:    sp,
		},
	}, nil
}

// podSelector picks the session's pod: what the policy and Service
// select it by.
func (b *Backend) podSelector(id string) map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelGateway: b.cfg.Prefix, LabelSession: id}
}
