package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/localcluster"
)

// repoRoot is the workspace root (the directory holding go.work).
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("find go.work: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// cniBuildFlags are the release flags axon-cni is built and measured with.
var cniBuildFlags = []string{"-trimpath", "-ldflags", "-s -w"}

// buildBinaries builds the services (as the e2e tests do) and a release
// axon-cni into dir.
func buildBinaries(t *testing.T, root, dir string) {
	t.Helper()
	for _, b := range []struct {
		dir  string
		env  []string
		args []string
	}{
		{"services", nil, []string{"build", "-o", dir + "/", "./cmd/..."}},
		{"services/operator", nil, []string{"build", "-o", dir + "/", "./cmd/axon-operator"}},
		{"cni-shim", []string{"CGO_ENABLED=0"}, append(append([]string{"build"}, cniBuildFlags...), "-o", filepath.Join(dir, "axon-cni"), "./cmd/axon-cni")},
	} {
		cmd := exec.Command("go", b.args...)
		cmd.Dir = filepath.Join(root, b.dir)
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in %s: %v\n%s", strings.Join(b.args, " "), b.dir, err, out)
		}
	}
}

// ns is an anonymous network namespace owned by this process: it goes away
// when closed, and at the latest when the process exits.
type ns struct {
	h    netns.NsHandle
	nl   *netlink.Handle
	path string // /proc/<pid>/fd/<fd>: usable by nsenter, libcni and the agent
	once sync.Once
}

var (
	nsMu   sync.Mutex
	allNS  []*ns
	nsPath = func(h netns.NsHandle) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h)) }
)

// newNS creates a namespace with its loopback up.
func newNS() (*ns, error) {
	h, err := func() (netns.NsHandle, error) {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			return -1, err
		}
		defer orig.Close()
		h, err := netns.New()
		if serr := netns.Set(orig); serr != nil {
			// Never unlock a thread left in the wrong namespace: it dies
			// with this goroutine.
			return -1, fmt.Errorf("restore namespace: %w", serr)
		}
		runtime.UnlockOSThread()
		return h, err
	}()
	if err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	n := &ns{h: h, nl: nl, path: nsPath(h)}
	nsMu.Lock()
	allNS = append(allNS, n)
	nsMu.Unlock()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// close releases the namespace; repeating it is harmless.
func (n *ns) close() {
	n.once.Do(func() {
		n.nl.Close()
		_ = n.h.Close()
	})
}

// closeAllNS closes every namespace still open (the test's cleanup).
func closeAllNS() {
	nsMu.Lock()
	defer nsMu.Unlock()
	for _, n := range allNS {
		n.close()
	}
	allNS = nil
}

// do runs fn on a thread inside n (for sockets and /proc/sys/net).
func (n *ns) do(fn func() error) error {
	return inNS(n.path, fn)
}

// inNS runs fn with the calling goroutine's thread in the namespace at
// path. A thread that cannot be restored is never unlocked (it exits with
// the goroutine) so no other code runs in the wrong namespace.
func inNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("restore namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

func (n *ns) sysctl(key, value string) error {
	return n.do(func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
}

// nsenter runs a command in the namespace at path (only the network
// namespace changes).
func nsenter(path, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + path, name}, args...)...)
}

func ping(from, to string) error {
	out, err := nsenter(from, "ping", "-c", "1", "-W", "1", to).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", to, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cluster is a running Axon system (etcd, IPAM, simulated nodes).
type cluster struct {
	*localcluster.Cluster
	prefix string
	mode   string
}

// startCluster starts Axon with nodes simulated nodes in mode; args are
// extra flags for every axon-datapath.
func startCluster(t *testing.T, bins, mode, tag string, nodes int, args ...string) *cluster {
	t.Helper()
	prefix := fmt.Sprintf("axb%d%s-", os.Getpid()%100000, tag)
	cfg := localcluster.Config{
		StateDir: t.TempDir(), BinDir: bins,
		EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0",
		Host:         "127.0.0.1",
		ReadyTimeout: 30 * time.Second, StopTimeout: 10 * time.Second,
		Nodes: nodes, NetnsPrefix: prefix, PodCIDR: "10.44.0.0/16",
		DatapathArgs: append([]string{"--routing-mode", mode}, args...),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start Axon (%s): %v", mode, err)
	}
	t.Cleanup(c.Stop)
	return &cluster{Cluster: c, prefix: prefix, mode: mode}
}

// stats reads a node's eBPF packet counters through its pinned maps.
func (c *cluster) stats(node int) (map[string]uint64, error) {
	objs, err := bpfdp.Load("/sys/fs/bpf/"+c.prefix+c.Nodes[node].Name, bpfdp.LoadOptions{})
	if err != nil {
		return nil, err
	}
	defer objs.Close()
	s, err := objs.Stats()
	if err != nil {
		return nil, err
	}
	return s.Map(), nil
}

// procs tracks started helper processes (iperf3 servers) so cleanup can
// kill exactly those.
type procs struct {
	mu   sync.Mutex
	cmds []*exec.Cmd
}

func (p *procs) add(c *exec.Cmd) {
	p.mu.Lock()
	p.cmds = append(p.cmds, c)
	p.mu.Unlock()
}

func (p *procs) killAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cmds {
		// Kill of a process already reaped is a harmless error: os.Process
		// never signals a reused pid.
		_ = c.Process.Kill()
	}
	p.cmds = nil
}
