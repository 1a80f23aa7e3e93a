package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
)

// TestPodEvent: every phase and container state the cluster can report
// becomes the session state the gateway shows, with Kubernetes' reason.
func TestPodEvent(t *testing.T) {
	now := metav1.Now()
	running := func(st corev1.ContainerState) []corev1.ContainerStatus {
		return []corev1.ContainerStatus{{Name: container, State: st}}
	}
	for _, tc := range []struct {
		name       string
		pod        corev1.Pod
		runnerExit string
		kind       contract.EventKind
		reason     string // a prefix
		code       int
	}{
		{name: "new", kind: contract.EventQueued, reason: "waiting for the scheduler"},
		{name: "unschedulable", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient memory."}}}},
			kind: contract.EventQueued, reason: "waiting for a node: Unschedulable: 0/3 nodes are available: 3 Insufficient memory."},
		{name: "scheduled", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			kind: contract.EventStarting},
		{name: "image pull", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: running(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image \"x\""}})}},
			kind: contract.EventStarting, reason: "ImagePullBackOff: Back-off pulling image"},
		{name: "container creating", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: running(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}})}},
			kind: contract.EventStarting},
		{name: "running", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: running(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})}},
			kind: contract.EventStarting},
		{name: "oom", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodFailed,
			ContainerStatuses: running(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}})}},
			kind: contract.EventExit, reason: "OOMKilled (exit code 137)", code: 137},
		{name: "oom before the phase", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: running(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}})}},
			kind: contract.EventExit, reason: "OOMKilled (exit code 137)", code: 137},
		{name: "evicted", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodFailed,
			Reason: "Evicted", Message: "The node was low on resource: memory."}},
			kind: contract.EventExit, reason: "Evicted: The node was low on resource: memory.", code: -1},
		{name: "deadline", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodFailed,
			Reason: "DeadlineExceeded", Message: "Pod was active on the node longer than the specified deadline"}},
			kind: contract.EventExit, reason: "DeadlineExceeded: Pod was active", code: -1},
		{name: "error exit", pod: corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodFailed,
			ContainerStatuses: running(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1}})}},
			kind: contract.EventExit, reason: "the runner exited with code 1", code: 1},
		{name: "completed", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
			kind: contract.EventExit, reason: "the session's pod completed"},
		{name: "completed, runner said why", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, runnerExit: "the workload ended",
			kind: contract.EventExit, reason: "the workload ended"},
		{name: "deleting", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Spec: corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}, kind: contract.EventStarting, reason: "the pod is being deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := podEvent(&tc.pod, tc.runnerExit)
			if e.Kind != tc.kind || !strings.HasPrefix(e.Reason, tc.reason) || (tc.reason == "" && e.Reason != "") || e.Code != tc.code {
				t.Errorf("got %s %q code %d; want %s %q code %d", e.Kind, e.Reason, e.Code, tc.kind, tc.reason, tc.code)
			}
			if e.Node != tc.pod.Spec.NodeName {
				t.Errorf("node %q, want %q", e.Node, tc.pod.Spec.NodeName)
			}
		})
	}
}

// TestHomeClaimPerUser attacks the {user} claim template: two portal
// users whose names differ only in case or punctuation ("alice.smith" and
// "alice-smith", an e-mail login's "Bob@x.org" and "bob-x-org") must not
// get the same claim, which would mount one's home volume into the
// other's pod. Seen failing with the old lower-and-replace mapping.
func TestHomeClaimPerUser(t *testing.T) {
	b := &Backend{cfg: Config{Prefix: "airlock", Profiles: map[string]PodOptions{
		"desktop": {Volumes: []Volume{{Claim: "home-{user}", MountPath: "/home/me"}}},
	}}}
	claim := func(owner string) string {
		p := b.pod(backend.Job{ID: "s-1", Profile: "desktop", Owner: owner}, 1000, 1000)
		return p.Spec.Volumes[2].PersistentVolumeClaim.ClaimName
	}
	names := []string{"alice-smith", "alice.smith", "Alice-Smith", "alice_smith", "alice-smith-",
		"bob-x-org", "bob@x.org", "Bob@x.org", "bob.x.org", "", "-", ".", "u"}
	// A plain name that copies what a changed name becomes.
	names = append(names, strings.TrimPrefix(claim("alice.smith"), "home-"))
	seen := map[string]string{}
	for _, n := range names {
		c := claim(n)
		if len(c) > 253 || !dnsLabelish(c) {
			t.Errorf("user %q: claim %q is not a valid object name", n, c)
		}
		if o, ok := seen[c]; ok {
			t.Errorf("users %q and %q share the claim %q", o, n, c)
		}
		seen[c] = n
	}
	if c := claim("alice"); c != "home-alice" {
		t.Errorf("a plain account's claim is %q, want home-alice", c)
	}
}

func dnsLabelish(s string) bool {
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(s)-1
		if !ok {
			return false
		}
	}
	return s != ""
}

// FuzzDNSName: every account name becomes a valid name, and two names
// never become the same one.
func FuzzDNSName(f *testing.F) {
	f.Add("alice.smith", "alice-smith")
	f.Add("Bob", "bob")
	f.Fuzz(func(t *testing.T, a, c string) {
		x, y := dnsName(a), dnsName(c)
		if !dnsLabelish(x) || len(x) > 63 {
			t.Fatalf("%q: %q", a, x)
		}
		if a != c && x == y {
			t.Fatalf("%q and %q both %q", a, c, x)
		}
	})
}
