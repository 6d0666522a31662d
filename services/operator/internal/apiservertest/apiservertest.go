// Package apiservertest runs a real kube-apiserver for tests: the binary
// scripts/k8s-bins.sh builds from k8s.io/kubernetes, on loopback, backed
// by an embedded etcd, serving TLS with a throwaway CA and authenticating
// one bearer token with every permission.
//
// Without the binary a test skips and says how to build it; under CI
// (bpf/testenv) it fails instead, because CI builds it first.
package apiservertest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/internal/testpki"
)

// Version is the Kubernetes release the tests run against.
const Version = "v1.37.2"

// BinsEnv names the environment variable that overrides the directory of
// the Kubernetes binaries (as it does for scripts/k8s-bins.sh).
const BinsEnv = "AXON_K8S_BINS"

const (
	// startAttempts bounds the starts on fresh ports after the port chosen
	// was taken by someone else before the apiserver bound it.
	startAttempts = 3
	// readyTimeout bounds the wait for /readyz; about 2 s on an idle
	// machine, much more on a loaded one.
	readyTimeout = 90 * time.Second
	// stopTimeout bounds the graceful stop before the process is killed.
	stopTimeout = 15 * time.Second
	// serviceCIDR is the cluster's Service range (nothing routes it).
	serviceCIDR = "10.96.0.0/16"
)

// errPortTaken is what a start attempt fails with when another process
// took the port between choosing and binding it.
var errPortTaken = errors.New("secure port taken")

// Server is a running kube-apiserver.
type Server struct {
	// Config reaches the apiserver as a user with every permission.
	Config *rest.Config
	// Client is a clientset made from Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config, for binaries under test
	// and for kubectl.
	Kubeconfig string
}

// BinDir returns the directory scripts/k8s-bins.sh builds the Kubernetes
// binaries into, and tests take them from: $AXON_K8S_BINS, else
// /var/cache/axon/k8s-<version> for root, else under the user's cache
// directory.
func BinDir() string {
	if d := os.Getenv(BinsEnv); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/axon/k8s-" + Version
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	return filepath.Join(cache, "axon", "k8s-"+Version)
}

// Start runs a kube-apiserver with its own etcd and waits until it is
// ready. Both stop when the test ends, also when it fails. Without the
// binary the test ends as [testenv.Unavailable].
func Start(t *testing.T) *Server {
	t.Helper()
	bin := filepath.Join(BinDir(), "kube-apiserver")
	if _, err := exec.LookPath(bin); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("kube-apiserver %s (build it with scripts/k8s-bins.sh kube-apiserver)", Version), err)
	}
	dir := t.TempDir()
	files := writeFiles(t, dir)
	etcd := etcdtest.Single(t)
	for attempt := 1; ; attempt++ {
		s, err := start(t, bin, dir, files, etcd.Endpoints())
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == startAttempts {
			t.Fatalf("apiservertest: start kube-apiserver: %v", err)
		}
	}
}

// files are what the apiserver and its clients are configured with.
type files struct {
	caFile, certFile, keyFile, saKeyFile, tokenFile string
	token                                           string
}

// writeFiles writes the serving certificate, the service account key and
// the token file into dir.
func writeFiles(t *testing.T, dir string) files {
	t.Helper()
	ca := testpki.New(t)
	f := files{caFile: ca.WriteCert(t, dir, "ca.pem")}
	f.certFile, f.keyFile = ca.Issue(t, dir, "apiserver", x509.ExtKeyUsageServerAuth)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		t.Fatal(err)
	}
	f.saKeyFile = filepath.Join(dir, "service-account.key")
	if err := os.WriteFile(f.saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	f.token = hex.EncodeToString(tok)
	f.tokenFile = filepath.Join(dir, "tokens.csv")
	line := f.token + `,axon-test,axon-test,"system:masters"` + "\n"
	if err := os.WriteFile(f.tokenFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// start makes one attempt on a fresh port.
func start(t *testing.T, bin, dir string, f files, etcd []string) (*Server, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("kube-apiserver-%d.log", port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--etcd-servers="+strings.Join(etcd, ","),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--tls-cert-file="+f.certFile,
		"--tls-private-key-file="+f.keyFile,
		"--client-ca-file="+f.caFile,
		"--token-auth-file="+f.tokenFile,
		"--service-account-key-file="+f.saKeyFile,
		"--service-account-signing-key-file="+f.saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--authorization-mode=AlwaysAllow",
		"--disable-admission-plugins=ServiceAccount",
		// Advertising 127.0.0.1 needs it: the default reconciler refuses
		// a loopback endpoint for the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range="+serviceCIDR,
		"--profiling=false",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The apiserver dies with the test binary, even one killed by a
	// timeout before its cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop(t, cmd, exited)
		}
		if t.Failed() {
			t.Logf("kube-apiserver log (last lines of %s):\n%s", logPath, tail(logPath, 40))
		}
	})

	cfg := &rest.Config{
		Host:            "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		BearerToken:     f.token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: f.caFile},
		QPS:             -1, // no client-side throttling in tests
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var lastErr error
	testpoll.Until(t, readyTimeout, func() error {
		select {
		case <-exited:
			return nil // reported below
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		lastErr = client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
		return lastErr
	})
	select {
	case <-exited:
		stopped = true
		log := tail(logPath, 40)
		if strings.Contains(log, "address already in use") {
			return nil, fmt.Errorf("port %d: %w", port, errPortTaken)
		}
		return nil, fmt.Errorf("kube-apiserver exited before it was ready (last error %v); its log:\n%s", lastErr, log)
	default:
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, cfg); err != nil {
		return nil, err
	}
	return &Server{Config: cfg, Client: client, Kubeconfig: kubeconfig}, nil
}

// stop terminates the apiserver gracefully, or kills it after stopTimeout.
func stop(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		t.Logf("kube-apiserver did not stop within %s: killing it", stopTimeout)
		_ = cmd.Process.Kill()
		<-exited
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeKubeconfig writes a kubeconfig for cfg to path.
func writeKubeconfig(path string, cfg *rest.Config) error {
	const name = "axon-test"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
