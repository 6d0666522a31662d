package localcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/localsys"
)

// buildBinaries builds every service binary and axon-cni (for demo pods)
// into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, pkg := range []string{"github.com/axon-cni/axon/services/cmd/...", "github.com/axon-cni/axon/services/operator/cmd/axon-operator", "github.com/axon-cni/axon/cni-shim/cmd/axon-cni"} {
		cmd := exec.CommandContext(t.Context(), "go", "build", "-o", dir+"/", pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

func TestRunStartsEveryServiceHealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary; skipped in -short mode")
	}
	cfg := Config{
		StateDir:       t.TempDir(),
		BinDir:         buildBinaries(t),
		EtcdClientAddr: "127.0.0.1:0",
		EtcdPeerAddr:   "127.0.0.1:0",
		Host:           "127.0.0.1",
		ReadyTimeout:   30 * time.Second,
		StopTimeout:    10 * time.Second,
		Nodes:          2,
		NetnsPrefix:    fmt.Sprintf("axt%d-", os.Getpid()),
		PodCIDR:        "10.43.0.0/16",
	}
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = Run(ctx, cfg, slog.New(slog.DiscardHandler), pw)
		_ = pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not stop")
		}
	})

	// Run prints its summary once every service is SERVING, or up if its
	// API is not implemented yet.
	summary := make([]byte, 16384)
	n, err := io.ReadAtLeast(pr, summary, len("Axon is running"))
	if err != nil {
		<-done
		t.Fatalf("no summary: %v (Run: %v)", err, runErr)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !strings.Contains(string(summary[:n]), "Axon is running") {
		t.Fatalf("summary = %q", summary[:n])
	}

	// The summary names the addresses the services were given.
	var comps []Component
	for _, line := range strings.Split(string(summary[:n]), "\n") {
		f := strings.Fields(line)
		for _, name := range []string{"ipam", "lbipam", "policy", "operator"} {
			if len(f) >= 2 && f[0] == name {
				comps = append(comps, Component{Name: name, Target: f[1]})
			}
		}
	}
	if len(comps) != 4 {
		t.Fatalf("summary names %d services, want 4:\n%s", len(comps), summary[:n])
	}
	if os.Geteuid() == 0 {
		for i := 1; i <= cfg.Nodes; i++ {
			comps = append(comps, cfg.datapath(simNode{Name: fmt.Sprintf("node-%d", i)}))
		}
	} else {
		testenv.Partial(t, "not root: simulated nodes are not started, only the control plane is checked")
	}
	// Services whose API is not implemented yet say so: NOT_SERVING, in
	// their health and in the summary.
	// The description axonctl reads names the same services and the
	// client certificate that reaches them.
	desc, err := localsys.Read(filepath.Join(cfg.StateDir, localsys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range comps {
		if got := desc.Services[c.label()]; c.Name != "datapath" && got != c.Target {
			t.Errorf("description names %s at %q, the summary at %q", c.label(), got, c.Target)
		}
	}
	if os.Geteuid() == 0 && len(desc.Datapaths) != cfg.Nodes {
		t.Errorf("description names datapaths %q, want %d", desc.Datapaths, cfg.Nodes)
	}
	clientTLS := daemon.ClientTLS{Peer: "test", CAFile: desc.TLS.CA, CertFile: desc.TLS.Cert, KeyFile: desc.TLS.Key}
	unimplemented := map[string]bool{"lbipam": true, "policy": true, "operator": true}
	for _, c := range comps {
		want := healthpb.HealthCheckResponse_SERVING
		if unimplemented[c.label()] {
			want = healthpb.HealthCheckResponse_NOT_SERVING
		}
		creds := insecure.NewCredentials()
		if c.Name != "datapath" {
			if creds, err = clientTLS.Credentials(c.Target); err != nil {
				t.Fatal(err)
			}
		}
		conn, err := grpc.NewClient(c.Target, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		_ = conn.Close()
		if err != nil || resp.GetStatus() != want {
			t.Errorf("%s health = %v, %v; want %s", c.label(), resp.GetStatus(), err, want)
		}
	}
	checkRefusesWithoutCertificate(t, comps[0].Target, desc.TLS.CA)
	checkCertificateFiles(t, filepath.Dir(desc.TLS.CA))
	for _, line := range strings.Split(string(summary[:n]), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !unimplemented[f[0]] {
			continue
		}
		if !strings.Contains(line, "NOT_SERVING (API not implemented yet)") {
			t.Errorf("summary line of %s = %q, want it to say NOT_SERVING (API not implemented yet)", f[0], line)
		}
	}

	cancel()
	select {
	case <-done:
		if runErr != nil {
			t.Fatalf("Run() = %v after cancel, want nil", runErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "etcd")); err != nil {
		t.Errorf("etcd data dir missing: %v", err)
	}
	if _, err := localsys.Read(filepath.Join(cfg.StateDir, localsys.FileName)); !errors.Is(err, localsys.ErrNotFound) {
		t.Errorf("description of the stopped system: %v, want %v", err, localsys.ErrNotFound)
	}
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(out), cfg.NetnsPrefix) {
		t.Errorf("namespaces left behind:\n%s", out)
	}
}

// checkRefusesWithoutCertificate checks that the service at target (TCP)
// answers no one without a client certificate: not in plaintext, not over
// TLS without one.
func checkRefusesWithoutCertificate(t *testing.T, target, caFile string) {
	t.Helper()
	pool, err := daemon.LoadCertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":               insecure.NewCredentials(),
		"TLS without certificate": credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
	} {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		_ = conn.Close()
		if err == nil {
			t.Errorf("%s: health check over %s answered, want it refused", target, name)
		}
	}
}

// checkCertificateFiles checks that the run's keys are private to the user
// who started it.
func checkCertificateFiles(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %o, want 700", dir, fi.Mode().Perm())
	}
	keys, err := filepath.Glob(filepath.Join(dir, "*.key"))
	if err != nil {
		t.Fatal(err)
	}
	// ipam, lbipam, policy, operator, etcd and the client's.
	if len(keys) != 6 {
		t.Errorf("%d keys in %s, want 6", len(keys), dir)
	}
	for _, k := range keys {
		fi, err := os.Stat(k)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("key %s has mode %o, want 600", k, fi.Mode().Perm())
		}
	}
}

func TestRunFailsWithoutBinaries(t *testing.T) {
	cfg := Config{
		StateDir: t.TempDir(), BinDir: t.TempDir(),
		EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0",
		Host:         "127.0.0.1",
		ReadyTimeout: 5 * time.Second, StopTimeout: 5 * time.Second,
	}
	err := Run(t.Context(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "axon-ipam") {
		t.Fatalf("Run() = %v, want an error naming axon-ipam", err)
	}
}

// TestWaitRestartsACrashedDatapath is issue 17 item 10: a datapath that
// dies is restarted, as a DaemonSet's would be, while the rest of the
// system runs on, and the pods keep reaching each other; one that keeps
// crashing right after starting (a crash loop) ends the run, saying so.
func TestWaitRestartsACrashedDatapath(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary; skipped in -short mode")
	}
	testenv.RequireBPF(t)
	cfg := Config{
		StateDir: t.TempDir(), BinDir: buildBinaries(t),
		EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0", Host: "127.0.0.1",
		ReadyTimeout: 30 * time.Second, StopTimeout: 10 * time.Second,
		Nodes: 2, DemoPods: 1, NetnsPrefix: fmt.Sprintf("axr%d-", os.Getpid()%100000), PodCIDR: "10.45.0.0/16",
		// Every crash counts as fast: the third ends the run.
		DatapathRestart: RestartPolicy{Backoff: 10 * time.Millisecond, MinRun: time.Hour, MaxFastCrashes: 2},
	}
	c, err := Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Stop)
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait(t.Context()) }()
	current := func() *process {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.datapaths[0]
	}
	// crash kills node-1's datapath as a crash would: not through
	// KillDatapath, which marks the exit as expected.
	crash := func() *process {
		p := current()
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		return p
	}
	from, to := c.Pods[0], c.Pods[1]
	if from.Node != "node-1" || to.Node != "node-2" {
		t.Fatalf("demo pods %v, want one on node-1, then one on node-2", c.Pods)
	}
	target := cfg.datapath(c.simNodes[0]).Target
	for n := 1; n <= cfg.DatapathRestart.MaxFastCrashes; n++ {
		old := crash()
		testpoll.Until(t, 60*time.Second, func() error {
			if current() == old {
				return errors.New("datapath of node-1 not restarted")
			}
			return checkServing(t, target)
		})
		for _, ip := range to.IPs {
			if out, err := exec.Command("nsenter", "--net="+from.Netns, "ping", "-c", "1", "-W", "2", ip).CombinedOutput(); err != nil {
				t.Errorf("after crash %d: %s cannot reach %s %s: %v\n%s", n, from.Name, to.Name, ip, err, out)
			}
		}
	}
	select {
	case err := <-waitErr:
		t.Fatalf("Wait() = %v before the crash loop", err)
	default:
	}
	crash()
	testpoll.Until(t, 60*time.Second, func() error {
		select {
		case err := <-waitErr:
			if err == nil || !strings.Contains(err.Error(), "crash loop") || !strings.Contains(err.Error(), "node-1") {
				t.Fatalf("Wait() = %v, want a crash loop of node-1's datapath", err)
			}
			return nil
		default:
			return errors.New("Wait still running after a crash loop")
		}
	})
}

// checkServing asks the health service at target once.
func checkServing(t *testing.T, target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %s", resp.GetStatus())
	}
	return nil
}
