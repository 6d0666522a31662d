package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/localcluster"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds every binary once per test process.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "axon-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"github.com/axon-cni/axon/services/cmd/...", "github.com/axon-cni/axon/services/operator/cmd/axon-operator", "github.com/axon-cni/axon/cni-shim/cmd/axon-cni"} {
			out, err := exec.Command("go", "build", "-o", binDir+"/", pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// env is a running Axon system with a CNI runtime's view of it.
type env struct {
	t        *testing.T
	cluster  *localcluster.Cluster
	cni      *libcni.CNIConfig
	bins     string
	prefix   string
	stateDir string // the cluster's (localcluster.Config.StateDir)
}

// requireRoot skips the test in -short mode, then requires what it needs:
// root for network namespaces and links, and BPF (see testenv).
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	testenv.RequireBPF(t)
}

// newEnv starts etcd, the control plane and nodes simulated nodes in the
// default routing mode.
func newEnv(t *testing.T, nodes int) *env {
	t.Helper()
	return newEnvMode(t, nodes, "")
}

// newEnvMode is newEnv with a routing mode ("" for the default); opts
// change the cluster's configuration further.
func newEnvMode(t *testing.T, nodes int, mode string, opts ...func(*localcluster.Config)) *env {
	t.Helper()
	requireRoot(t)
	bins := binaries(t)
	prefix := fmt.Sprintf("axe%d%s-", os.Getpid()%100000, shortName(t))
	cfg := localcluster.Config{
		StateDir: t.TempDir(), BinDir: bins,
		EtcdClientAddr: "127.0.0.1:0", EtcdPeerAddr: "127.0.0.1:0",
		Host:         "127.0.0.1",
		ReadyTimeout: 30 * time.Second, StopTimeout: 10 * time.Second,
		Nodes: nodes, NetnsPrefix: prefix, PodCIDR: "10.44.0.0/16", PodCIDR6: "fd00:44::/104",
		DatapathArgs: []string{"--gc-min-age", "0s", "--health-probe-interval", "300ms", "--masquerade-sync-interval", "500ms"},
	}
	if mode != "" {
		cfg.DatapathArgs = append(cfg.DatapathArgs, "--routing-mode", mode)
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start Axon: %v", err)
	}
	t.Cleanup(c.Stop)
	return &env{t: t, cluster: c, bins: bins, prefix: prefix, stateDir: cfg.StateDir,
		// An explicit exec: libcni sets its default lazily, which races when
		// pods are added in parallel.
		cni: libcni.NewCNIConfigWithCacheDir([]string{bins}, t.TempDir(), &invoke.DefaultExec{
			RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{},
		})}
}

// shortName names a test's namespaces and pins: unique per test and
// subtest (a hash of the whole name), short enough for every name built on it.
func shortName(t *testing.T) string {
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	return fmt.Sprintf("%08x", h.Sum32())
}

// conflist is the network configuration of a node's runtime.
func (e *env) conflist(node int) *libcni.NetworkConfigList {
	l, err := e.cluster.Nodes[node].Conflist()
	if err != nil {
		panic(err) // a fixed JSON document of two strings always parses
	}
	return l
}

// namedConflist is the node's network configuration under another network
// name, as a second network using axon-cni would be.
func (e *env) namedConflist(node int, name string) *libcni.NetworkConfigList {
	e.t.Helper()
	return e.editConflist(node, func(m map[string]any) { m["name"] = name })
}

// editConflist is the node's network configuration changed by edit.
func (e *env) editConflist(node int, edit func(map[string]any)) *libcni.NetworkConfigList {
	e.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.conflist(node).Bytes, &m); err != nil {
		e.t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// pod is a pod sandbox: a network namespace wired by the runtime.
type pod struct {
	name, netns string
	node        int
	ip, ip6     string
	rt          *libcni.RuntimeConf
	conf        *libcni.NetworkConfigList // the network it was added to
}

// addPod creates a sandbox namespace on node and runs CNI ADD for it.
func (e *env) addPod(node int, name string) *pod {
	e.t.Helper()
	p, err := e.tryAddPod(node, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// tryAddPod is addPod for goroutines other than the test's.
func (e *env) tryAddPod(node int, name string) (*pod, error) {
	return e.tryAddPodConf(node, name, e.conflist(node))
}

// addPodConf is addPod with another network configuration.
func (e *env) addPodConf(node int, name string, conf *libcni.NetworkConfigList) *pod {
	e.t.Helper()
	p, err := e.tryAddPodConf(node, name, conf)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// tryAddPodConf adds a pod to conf; opts change its runtime configuration
// (capability arguments, ...).
func (e *env) tryAddPodConf(node int, name string, conf *libcni.NetworkConfigList, opts ...func(*libcni.RuntimeConf)) (*pod, error) {
	ns := e.prefix + name
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v %s", ns, err, out)
	}
	e.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	p := &pod{name: name, netns: "/var/run/netns/" + ns, node: node}
	p.rt = &libcni.RuntimeConf{
		ContainerID: "ctr-" + name, NetNS: p.netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
	}
	for _, o := range opts {
		o(p.rt)
	}
	p.conf = conf
	res, err := e.cni.AddNetworkList(context.Background(), conf, p.rt)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD %s: %w", name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	if len(r.IPs) == 0 {
		return nil, fmt.Errorf("CNI ADD %s returned no IP: %v", name, r)
	}
	for _, ipc := range r.IPs {
		if ipc.Address.IP.To4() != nil {
			p.ip = ipc.Address.IP.String()
		} else {
			p.ip6 = ipc.Address.IP.String()
		}
	}
	if p.ip == "" {
		return nil, fmt.Errorf("CNI ADD %s returned no IPv4 address: %v", name, r)
	}
	return p, nil
}

func (e *env) delPod(p *pod) {
	e.t.Helper()
	if err := e.tryDelPod(p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tryDelPod(p *pod) error {
	if err := e.cni.DelNetworkList(context.Background(), p.conf, p.rt); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", p.name, err)
	}
	return nil
}

// run runs a command in the pod's (or any) network namespace.
func run(netns string, name string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns, name}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (e *env) ping(from string, to string) {
	e.t.Helper()
	if err := e.tryPing(from, to); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tryPing(from, to string) error {
	if out, err := run(from, "ping", "-c", "2", "-i", "0.2", "-W", "2", to); err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", to, from, err, out)
	}
	return nil
}

// eventually retries fn for a few seconds: routes to other nodes follow
// IPAM's block watch.
func (e *env) eventually(fn func() error) {
	e.t.Helper()
	testpoll.Until(e.t, 10*time.Second, fn)
}

// links lists the interface names in a namespace.
func links(netns string) []string {
	out, _ := run(netns, "ip", "-o", "link", "show")
	var names []string
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	return names
}

func gcArgs(valid ...*pod) *libcni.GCArgs {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.rt.ContainerID, IfName: p.rt.IfName})
	}
	return args
}

// stats reads a node's eBPF packet counters through its pinned maps.
func (e *env) stats(node int) map[string]uint64 {
	e.t.Helper()
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+e.cluster.Nodes[node].Name, bpfdp.LoadOptions{})
	if err != nil {
		e.t.Fatalf("open node %d's maps: %v", node, err)
	}
	defer objs.Close()
	s, err := objs.Stats()
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Map()
}

// nodeStatus asks a node's datapath for its status.
func (e *env) nodeStatus(node int) (*datapathv1alpha1.NodeStatus, error) {
	conn, err := grpc.NewClient("unix://"+e.cluster.Nodes[node].DatapathSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := datapathv1alpha1.NewDatapathServiceClient(conn).GetNodeStatus(context.Background(), &datapathv1alpha1.GetNodeStatusRequest{})
	return resp.GetStatus(), err
}

// assertNothingLeft checks that a node has no pod left in any layer: veths,
// eBPF endpoint entries, host routes to pod addresses, IPAM allocations.
func (e *env) assertNothingLeft(node int) {
	e.t.Helper()
	n := e.cluster.Nodes[node]
	if l := lxcLinks(n.Netns); len(l) != 0 {
		e.t.Errorf("veths left: %v", l)
	}
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+n.Name, bpfdp.LoadOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer objs.Close()
	health := e.healthAddrs(node)
	eps, err := objs.Endpoints()
	if err != nil {
		e.t.Fatal(err)
	}
	for ip := range eps {
		if !health[ip] {
			e.t.Errorf("eBPF endpoint entry left: %s", ip)
		}
	}
	out, _ := run(n.Netns, "ip", "-4", "route", "show")
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); strings.Contains(line, "lxc") && (len(f) < 3 || !isHealthVeth(f[2])) {
			e.t.Errorf("route to a pod left: %s", line)
		}
	}
	// A DEL leaves its release to the datapath's release worker, which
	// does it within moments.
	testpoll.Until(e.t, 10*time.Second, func() error {
		if allocs := e.pods(node); len(allocs) != 0 {
			return fmt.Errorf("IPAM allocations left on %s: %v", n.Name, allocs)
		}
		return nil
	})
}

// ipamClient dials the cluster's IPAM service.
func (e *env) ipamClient() ipamv1alpha1.IPAMServiceClient {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.cluster.IPAMSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	return ipamv1alpha1.NewIPAMServiceClient(conn)
}

// pods lists the IPAM allocations of a node's pods (not its health
// endpoint's).
func (e *env) pods(node int) []*ipamv1alpha1.Allocation {
	e.t.Helper()
	n := e.cluster.Nodes[node]
	resp, err := e.ipamClient().ListAllocations(context.Background(), &ipamv1alpha1.ListAllocationsRequest{Node: n.Name})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*ipamv1alpha1.Allocation
	for _, a := range resp.GetAllocations() {
		if a.GetHandle().GetContainerId() != health.ContainerID(n.Name) {
			out = append(out, a)
		}
	}
	return out
}

// healthAddrs are the addresses of a node's health endpoint.
func (e *env) healthAddrs(node int) map[netip.Addr]bool {
	e.t.Helper()
	n := e.cluster.Nodes[node]
	resp, err := e.ipamClient().GetAllocation(context.Background(), &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: health.ContainerID(n.Name), InterfaceName: "eth0"},
	}})
	out := map[netip.Addr]bool{}
	if err != nil {
		return out
	}
	for _, ad := range resp.GetAllocation().GetAddresses() {
		if ip, err := netip.ParseAddr(ad.GetIp()); err == nil {
			out[ip] = true
		}
	}
	return out
}

// linkIn returns the link dev of the network namespace at netnsPath.
func linkIn(t *testing.T, netnsPath, dev string) netlink.Link {
	t.Helper()
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s in %s: %v", dev, netnsPath, err)
	}
	return l
}
