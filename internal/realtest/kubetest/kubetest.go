// Package kubetest starts a real Kubernetes control plane on loopback for
// the kubernetes backend's tests: Debian's etcd, and kube-apiserver,
// kube-scheduler and kwok (simulated nodes and pod lifecycles, no kubelet)
// built from the Go module proxy by scripts/kube-bins.sh into a cache
// outside the repository. It lives apart from realtest so the many tests
// that import realtest do not link client-go.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

// Version is the Kubernetes release scripts/kube-bins.sh builds; keep the
// two in step.
const Version = "1.37.2"

// NodeName is the one kwok node; NodeLabel is on it.
const (
	NodeName  = "kwok-node-0"
	NodeLabel = "airlock.test/node"
)

// Cluster is a running control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string
	REST       *rest.Config
	Client     k8s.Interface
}

var (
	once    sync.Once
	cluster *Cluster
	err0    error
	procs   []*exec.Cmd
)

// BinDir is where scripts/kube-bins.sh puts the binaries.
func BinDir() string {
	if d := os.Getenv("AIRLOCK_KUBE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/airlock-test/kube-v" + Version
}

// Start starts the control plane once per test process, or skips when the
// binaries are not built (scripts/install-deps.sh builds them). Call Stop
// from TestMain.
func Start(t testing.TB) *Cluster {
	t.Helper()
	dir := BinDir()
	for _, b := range []string{"kube-apiserver", "kube-scheduler", "kwok", "kwok-stages.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Skipf("%s is not built (%v): run scripts/kube-bins.sh (scripts/install-deps.sh does)", b, err)
		}
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skipf("etcd is not installed (%v): scripts/install-deps.sh installs etcd-server", err)
	}
	once.Do(func() { cluster, err0 = start(dir) })
	if err0 != nil {
		t.Fatal(err0)
	}
	return cluster
}

// Stop ends the control plane's processes and removes its files.
func Stop() {
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			// The API server drains for a while; the tests are over.
			p.Process.Kill()
			<-done
		}
	}
	procs = nil
	if cluster != nil {
		os.RemoveAll(cluster.Dir)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func run(dir, name, bin string, args ...string) error {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Never outlive the test process, even one killed by go test's timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	log.Close()
	procs = append(procs, cmd)
	return nil
}

func start(bins string) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "airlock-kube-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				err = fmt.Errorf("%w\n--- %s:\n%s", err, filepath.Base(l), b)
			}
			Stop()
		}
	}()
	var ports [6]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	// Debian's etcd 3.4 needs progress notifications turned on, or watches
	// without a resource version fail (recipes-kubernetes.md pitfall 1).
	if err := run(dir, "etcd", "etcd", "--name", "airlock", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "airlock="+peerURL, "--experimental-watch-progress-notify-interval=500ms"); err != nil {
		return nil, err
	}
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	for name, data := range map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(token + ",admin,admin-uid,\"system:masters\"\n"),
	} {
		if err := os.WriteFile(filepath.Join(pki, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	apiPort := strconv.Itoa(ports[2])
	if err := run(dir, "kube-apiserver", filepath.Join(bins, "kube-apiserver"),
		"--etcd-servers="+etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+apiPort, "--endpoint-reconciler-type=none", "--cert-dir="+pki,
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file="+filepath.Join(pki, "tokens.csv"), "--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller manager makes default service accounts, and
		// nothing would lift the not-ready taint from kwok's node.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"); err != nil {
		return nil, err
	}
	ca := filepath.Join(pki, "apiserver.crt")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:%s", certificate-authority: %q}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, apiPort, ca, token)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		return nil, err
	}
	var rc *rest.Config
	var client *k8s.Clientset
	// The certificate appears when the server starts serving; readyz says
	// when etcd and the post-start hooks are done.
	if err := realtest.WaitFor(90*time.Second, func() error {
		if _, err := os.Stat(ca); err != nil {
			return err
		}
		if rc == nil {
			c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			c.QPS, c.Burst = 200, 400
			if client, err = k8s.NewForConfig(c); err != nil {
				return err
			}
			rc = c
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			// The CA file may have been read while the server was still
			// writing it: read it again on the next try.
			rc, client = nil, nil
			return fmt.Errorf("readyz: %w: %s", err, body)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	if err := run(dir, "kube-scheduler", filepath.Join(bins, "kube-scheduler"), "--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[3])); err != nil {
		return nil, err
	}
	kwokPort := strconv.Itoa(ports[4])
	if err := run(dir, "kwok", filepath.Join(bins, "kwok"), "--kubeconfig="+kubeconfig,
		"-c", filepath.Join(bins, "kwok-stages.yaml"),
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-ip=127.0.0.1", "--node-port="+kwokPort, "--cidr=10.244.0.0/16",
		"--server-address=127.0.0.1:"+kwokPort); err != nil {
		return nil, err
	}
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels: map[string]string{NodeLabel: "yes", "kubernetes.io/hostname": NodeName, "type": "kwok"}},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"),
				corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("2000")},
		},
	}
	node.Status.Allocatable = node.Status.Capacity.DeepCopy()
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create node: %w", err)
	}
	if err := realtest.WaitFor(60*time.Second, func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not ready")
	}); err != nil {
		return nil, fmt.Errorf("kwok node: %w", err)
	}
	return &Cluster{Dir: dir, Kubeconfig: kubeconfig, REST: rc, Client: client}, nil
}

// Namespace makes a fresh namespace for one test. There is no namespace
// controller to finish deleting one, so it is left behind (the cluster
// ends with the test process).
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "t-" + hex.EncodeToString(b)
	if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}
