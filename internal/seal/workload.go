package seal

import "fmt"

// WorkloadThreadHook is one more confinement step for everything the
// workload spawner starts (the workload and the helpers). It runs on that
// spawner's thread after its capabilities are dropped, no_new_privs is set
// and the Landlock scope is applied, before the first fork, so whatever
// per-thread state it sets (a seccomp filter, another Landlock layer) every
// workload process inherits. Its warnings go to the "ready" message; an
// error ends the seal's setup.
type WorkloadThreadHook func(p *Plan) (warnings []string, err error)

// workloadThreadHooks run in order on the workload spawner's thread.
var workloadThreadHooks []WorkloadThreadHook

// setupWorkloadThread is the workload spawner's setup: the connector
// spawner's confinement plus a Landlock domain that keeps the workload away
// from every process outside it (init, the connectors): no signals, no
// ptrace, no /proc/PID/{mem,environ,fd}, no pidfd_getfd, no abstract
// sockets. The connectors are started from another thread, outside the
// domain.
func (in *initProc) setupWorkloadThread() ([]string, error) {
	warnings, err := confineThread(in.plan.Unsealed, in.ownerSwitchCaps()...)
	if err != nil {
		return warnings, err
	}
	abi := landlockABI()
	initToo := " and init"
	if in.plan.RootMode {
		initToo = "" // init is root, another uid
	}
	switch err := scopeThread(abi); {
	case err == errScopeUnsupported:
		warnings = append(warnings, fmt.Sprintf(
			"kernel Landlock ABI %d (6 needed, Linux 6.12): the workload can signal its connectors%s; "+
				"ptrace, /proc/PID/{mem,environ,fd} and pidfd_getfd stay refused because they are not dumpable", abi, initToo))
	case err != nil:
		return warnings, fmt.Errorf("confine the workload with Landlock: %w", err)
	}
	for _, h := range workloadThreadHooks {
		w, err := h(in.plan)
		warnings = append(warnings, w...)
		if err != nil {
			return warnings, err
		}
	}
	return warnings, nil
}
