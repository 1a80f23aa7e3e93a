package kubernetes

import (
	"cmp"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/airlock-hpc/airlock/internal/backend"
	"github.com/airlock-hpc/airlock/internal/contract"
)

// stuck are the container waiting reasons that do not fix themselves: the
// session is told why it is not starting (the gateway's start timeout ends
// it), rather than a bare "starting".
var stuck = map[string]bool{
	"ImagePullBackOff": true, "ErrImagePull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "CrashLoopBackOff": true,
	"RunContainerError": true, "ErrImageNeverPull": true,
}

// podEvent is what pod's status means for its session, in the runner's
// terms: queued (not yet on a node, with the scheduler's reason), starting
// (on a node; with Kubernetes' reason when the container cannot start),
// or exit (with the reason the pod or its container ended). runnerExit is
// what the runner itself reported when it ended, which is the better
// reason when there is one. "ready" comes only from the runner's
// registration.
func podEvent(pod *corev1.Pod, runnerExit string) backend.Event {
	node := pod.Spec.NodeName
	cs := runnerStatus(pod)
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		return backend.Event{Kind: contract.EventExit, Node: node, Reason: cmp.Or(runnerExit, "the session's pod completed")}
	case corev1.PodFailed:
		reason, code := failure(pod, cs)
		if runnerExit != "" && code == 0 {
			reason = runnerExit
		}
		return backend.Event{Kind: contract.EventExit, Node: node, Reason: reason, Code: code}
	}
	if cs != nil && cs.State.Terminated != nil {
		// The container ended; the phase follows.
		reason, code := failure(pod, cs)
		if cs.State.Terminated.ExitCode == 0 {
			reason = cmp.Or(runnerExit, "the session's pod completed")
		}
		return backend.Event{Kind: contract.EventExit, Node: node, Reason: reason, Code: code}
	}
	if pod.DeletionTimestamp != nil {
		return backend.Event{Kind: contract.EventStarting, Node: node, Reason: "the pod is being deleted"}
	}
	if node == "" {
		reason := "waiting for the scheduler"
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason != "" {
				reason = "waiting for a node: " + c.Reason
				if c.Message != "" {
					reason += ": " + c.Message
				}
			}
		}
		return backend.Event{Kind: contract.EventQueued, Reason: reason}
	}
	e := backend.Event{Kind: contract.EventStarting, Node: node}
	if cs != nil && cs.State.Waiting != nil && stuck[cs.State.Waiting.Reason] {
		e.Reason = cs.State.Waiting.Reason
		if m := cs.State.Waiting.Message; m != "" {
			e.Reason += ": " + m
		}
	}
	return e
}

func runnerStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == container {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// failure says why a pod failed: the pod's reason (Evicted,
// DeadlineExceeded) before the container's (OOMKilled, Error with its exit
// code). The code is the runner's exit code, or -1 when the cluster ended
// the pod without it.
func failure(pod *corev1.Pod, cs *corev1.ContainerStatus) (string, int) {
	var parts []string
	code := -1
	if r := pod.Status.Reason; r != "" {
		parts = append(parts, join(r, pod.Status.Message))
	}
	if cs != nil && cs.State.Terminated != nil {
		t := cs.State.Terminated
		code = int(t.ExitCode)
		r := t.Reason
		if r == "" || r == "Error" {
			r = fmt.Sprintf("the runner exited with code %d", t.ExitCode)
		} else if t.ExitCode != 0 {
			r = fmt.Sprintf("%s (exit code %d)", r, t.ExitCode)
		}
		parts = append(parts, r)
	}
	if len(parts) == 0 {
		return "the session's pod failed", code
	}
	return strings.Join(parts, "; "), code
}

func join(reason, msg string) string {
	if msg == "" {
		return reason
	}
	return reason + ": " + msg
}
