package kubernetes

import (
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

func TestParseEgress(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.0.0/16":              "10.1.0.0/16 ",
		"192.0.2.7":                "192.0.2.7/32 ",
		"192.0.2.7:443":            "192.0.2.7/32 TCP 443-0",
		"10.0.0.0/8:8000-8100/tcp": "10.0.0.0/8 TCP 8000-8100",
		"10.0.0.0/8:53/udp":        "10.0.0.0/8 UDP 53-0",
		"[2001:db8::]/32:53/udp":   "2001:db8::/32 UDP 53-0",
		"[2001:db8::1]:443":        "2001:db8::1/128 TCP 443-0",
		"[2001:db8::1]":            "2001:db8::1/128 ",
		"[2001:db8::]/32":          "2001:db8::/32 ",
		"192.0.2.0/24:9000/sctp":   "192.0.2.0/24 SCTP 9000-0",
	} {
		r, err := ParseEgress(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		got := r.To[0].IPBlock.CIDR + " "
		if len(r.Ports) == 1 {
			p := r.Ports[0]
			end := int32(0)
			if p.EndPort != nil {
				end = *p.EndPort
			}
			got += string(*p.Protocol) + " " + p.Port.String() + "-" + strconv.Itoa(int(end))
		}
		if got != want {
			t.Errorf("%s: got %q want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "example.org", "10.0.0.1/8", "10.0.0.0/8:", "10.0.0.0/8:0", "10.0.0.0/8:65536",
		"10.0.0.0/8:443/icmp", "10.0.0.0/8:90-80", "2001:db8::1", "[2001:db8::1", "[2001:db8::1]x", "10.0.0.0/8:+1",
		"10.0.0.0/8:080", "fe80::1%eth0", "[fe80::1%eth0]"} {
		if _, err := ParseEgress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.HasPrefix(err.Error(), "egress ") {
			t.Errorf("%q: error %q does not name the entry", bad, err)
		}
	}
}

// FuzzParseEgress: any entry is refused with an error or becomes one valid
// peer whose ports are in range.
func FuzzParseEgress(f *testing.F) {
	for _, s := range []string{"10.1.0.0/16", "192.0.2.7:443", "10.0.0.0/8:8000-8100/tcp", "[2001:db8::]/32:53/udp", "[::1]:1", "x:y/z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseEgress(s)
		if err != nil {
			return
		}
		if len(r.To) != 1 || r.To[0].IPBlock == nil || r.To[0].IPBlock.CIDR == "" {
			t.Fatalf("%q: %+v", s, r)
		}
		for _, p := range r.Ports {
			if v := p.Port.IntValue(); v < 1 || v > 65535 {
				t.Fatalf("%q: port %d", s, v)
			}
			if p.EndPort != nil && (*p.EndPort < int32(p.Port.IntValue()) || *p.EndPort > 65535) {
				t.Fatalf("%q: end port %d", s, *p.EndPort)
			}
		}
	})
}
