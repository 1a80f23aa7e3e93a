package realtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Slurm is a one-node cluster of real daemons (munged, slurmctld, slurmd)
// started by hand, the way shared/recipes.md §4 does it: this machine's
// short host name is the node, jobs run here as their submitter.
type Slurm struct {
	// Dir holds slurm.conf, state, spool and logs.
	Dir string
	// Conf is the path client commands need in SLURM_CONF.
	Conf string
	// Node is the node's name (this machine's short host name).
	Node string
	// Partition is the one partition, the default.
	Partition string
}

// Env is the environment entry that points Slurm's commands at the cluster.
func (s *Slurm) Env() []string { return []string{"SLURM_CONF=" + s.Conf} }

// Command runs a Slurm client command (squeue, scontrol, ...) against the
// cluster and returns its standard output.
func (s *Slurm) Command(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), s.Env()...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, ee.Stderr)
	}
	return string(out), err
}

// slurmCPUs is how many CPUs the test node claims (config_overrides makes
// slurmd believe the file, not the machine): enough for the tests' sessions
// to run side by side on two real cores.
const slurmCPUs = 16

var (
	slurmOnce    sync.Once
	slurmCluster *Slurm
	slurmErr     error
	slurmPids    []int
)

// SlurmCluster starts the cluster once per test process, or skips when
// Slurm is not installed (`make test` installs it) or the tests do not run
// as root (the daemons must). Call StopSlurm from TestMain.
func SlurmCluster(t testing.TB) *Slurm {
	t.Helper()
	for _, p := range []string{"slurmctld", "slurmd", "munged", "sbatch"} {
		if _, err := exec.LookPath(p); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + p); err2 != nil {
				t.Skipf("Slurm is not installed (%s: %v); make test installs it", p, err)
			}
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the Slurm daemons need root")
	}
	slurmOnce.Do(func() { slurmCluster, slurmErr = startSlurm() })
	if slurmErr != nil {
		t.Fatal(slurmErr)
	}
	return slurmCluster
}

// StopSlurm cancels every job left, waits for their processes to end, and
// stops the daemons SlurmCluster started (munged, which other test
// processes may share, stays).
func StopSlurm() {
	if s := slurmCluster; s != nil {
		if out, err := s.Command("squeue", "--noheader", "--format=%i"); err == nil && strings.TrimSpace(out) != "" {
			s.Command("scancel", strings.Fields(out)...)
			WaitFor(30*time.Second, func() error {
				out, err := s.Command("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING", "--format=%i")
				if err == nil && strings.TrimSpace(out) != "" {
					return errors.New("jobs still running")
				}
				return err
			})
		}
	}
	for _, pid := range slurmPids {
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
	if slurmCluster != nil {
		os.RemoveAll(slurmCluster.Dir)
	}
}

func startSlurm() (*Slurm, error) {
	if err := startMunge(); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	node, _, _ := strings.Cut(host, ".")
	dir, err := os.MkdirTemp("", "airlock-slurm-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"state", "spool", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The jobs' users read slurm.conf through the client commands.
	os.Chmod(dir, 0o755)
	// Free ports, so test processes of different packages each have their
	// own cluster.
	ctlPort, err := freePort()
	if err != nil {
		return nil, err
	}
	dPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Slurm{Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), Node: node, Partition: "debug"}
	conf := fmt.Sprintf(`ClusterName=airlocktest
SlurmctldHost=%[1]s
SlurmUser=root
SlurmdUser=root
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=%[4]s/state
SlurmdSpoolDir=%[4]s/spool
SlurmctldPidFile=%[4]s/slurmctld.pid
SlurmdPidFile=%[4]s/slurmd.pid
SlurmctldLogFile=%[4]s/log/slurmctld.log
SlurmdLogFile=%[4]s/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
SlurmdParameters=config_overrides
NodeName=%[1]s CPUs=%[5]d RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`, node, ctlPort, dPort, dir, slurmCPUs)
	if err := os.WriteFile(s.Conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	for _, d := range []string{"slurmctld", "slurmd"} {
		cmd := exec.Command(d, "-f", s.Conf)
		cmd.Env = append(os.Environ(), s.Env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("start %s: %v: %s", d, err, out)
		}
		pid, err := readPid(filepath.Join(dir, d+".pid"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		slurmPids = append(slurmPids, pid)
	}
	err = WaitFor(30*time.Second, func() error {
		out, err := s.Command("sinfo", "-h", "-o", "%T")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "idle" {
			return fmt.Errorf("node is %q", strings.TrimSpace(out))
		}
		return nil
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log", "slurmctld.log"))
		return nil, fmt.Errorf("slurm node never idle: %v\n%s", err, log)
	}
	return s, nil
}

// startMunge starts munged unless one already answers.
func startMunge() error {
	if mungeWorks() == nil {
		return nil
	}
	for _, d := range []string{"/run/munge", "/var/log/munge", "/var/lib/munge"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		exec.Command("chown", "munge:munge", d).Run()
	}
	if out, err := exec.Command("runuser", "-u", "munge", "--", "/usr/sbin/munged").CombinedOutput(); err != nil {
		// Another test process may have started it just now.
		if mungeWorks() == nil {
			return nil
		}
		return fmt.Errorf("start munged: %v: %s", err, out)
	}
	return WaitFor(10*time.Second, mungeWorks)
}

func mungeWorks() error {
	cred, err := exec.Command("munge", "-n").Output()
	if err != nil {
		return fmt.Errorf("munge: %w", err)
	}
	cmd := exec.Command("unmunge")
	cmd.Stdin = strings.NewReader(string(cred))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unmunge: %w", err)
	}
	return nil
}

func readPid(p string) (int, error) {
	var pid int
	err := WaitFor(10*time.Second, func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return errors.New("pid file not written yet")
		}
		return nil
	})
	return pid, err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
