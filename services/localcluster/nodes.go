package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// simNode is a simulated node: a network namespace joined to the others by
// an underlay bridge that lives in a namespace of its own, so nothing of
// the simulation touches the host's network.
type simNode struct {
	Name  string
	Netns string // the namespace's name (ip netns)
	IP    netip.Addr
	IP6   netip.Addr
}

// Path is the node namespace's path for nsenter and CNI.
func (n simNode) Path() string { return "/var/run/netns/" + n.Netns }

// underlayPrefix holds the simulated nodes' addresses. It exists only
// inside namespaces this package creates.
var (
	underlayPrefix  = netip.MustParsePrefix("192.168.251.0/24")
	underlayPrefix6 = netip.MustParsePrefix("fd00:251::/64")
)

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// WireGSOMaxSize is the largest GSO packet the underlay bridge's ports
// pass on whole. The bridge stands for a network of NICs that segment in
// hardware (many take 512 KiB); with the kernel's 64 KiB default the
// bridge would cut up, in software, what a node with BIG TCP sends.
const WireGSOMaxSize = 196608

// raiseGSOMaxSize raises the GSO and GRO max sizes of a device (the
// iproute2 of Debian 12 cannot set IPv4's).
func raiseGSOMaxSize(netnsName, dev string, size int) error {
	ns, err := netns.GetFromName(netnsName)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsName, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsName, err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err == nil {
		err = veth.RaiseGSOMaxSize(h, l, size)
	}
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, netnsName, err)
	}
	return nil
}

// outsideIndex numbers the "outside" host's underlay address: a namespace
// on the underlay that is no node, standing for the world beyond the
// cluster.
const outsideIndex = 250

// setupNodes creates n node namespaces and an "outside" one on an underlay
// bridge. teardown removes every namespace it created, also after a
// partial failure.
func setupNodes(prefix string, n, mtu int) (nodes []simNode, outside simNode, teardown func(), err error) {
	var created []string
	teardown = func() {
		for i := len(created) - 1; i >= 0; i-- {
			_ = ip("netns", "del", created[i])
		}
	}
	defer func() {
		if err != nil {
			teardown()
		}
	}()
	underlay := prefix + "underlay"
	if err := ip("netns", "add", underlay); err != nil {
		return nil, simNode{}, teardown, err
	}
	created = append(created, underlay)
	for _, args := range [][]string{
		{"-n", underlay, "link", "add", "br0", "type", "bridge"},
		{"-n", underlay, "link", "set", "br0", "up"},
	} {
		if err := ip(args...); err != nil {
			return nil, simNode{}, teardown, err
		}
	}
	hosts := make([]simNode, 0, n+1)
	for i := 1; i <= n; i++ {
		hosts = append(hosts, simNode{Name: fmt.Sprintf("node-%d", i), Netns: fmt.Sprintf("%snode-%d", prefix, i)})
	}
	hosts = append(hosts, simNode{Name: "outside", Netns: prefix + "outside"})
	for i, node := range hosts {
		index := 11 + i
		if node.Name == "outside" {
			index = outsideIndex
		}
		addr, ok := nth(underlayPrefix, index)
		if !ok {
			return nil, simNode{}, teardown, fmt.Errorf("too many nodes for %s", underlayPrefix)
		}
		node.IP = addr
		node.IP6, _ = nth(underlayPrefix6, index)
		if err := ip("netns", "add", node.Netns); err != nil {
			return nil, simNode{}, teardown, err
		}
		created = append(created, node.Netns)
		port := fmt.Sprintf("n%d", i+1)
		var mtuArgs []string
		if mtu != 0 {
			mtuArgs = []string{"mtu", fmt.Sprint(mtu)}
		}
		link := append(append([]string{"link", "add", "eth0", "netns", node.Netns}, mtuArgs...), "type", "veth", "peer", "name", port, "netns", underlay)
		for _, args := range [][]string{
			append(link, mtuArgs...),
			{"-n", underlay, "link", "set", port, "master", "br0", "up"},
			{"-n", node.Netns, "addr", "add", netip.PrefixFrom(addr, underlayPrefix.Bits()).String(), "dev", "eth0"},
			{"-n", node.Netns, "addr", "add", netip.PrefixFrom(node.IP6, underlayPrefix6.Bits()).String(), "dev", "eth0", "nodad"},
			{"-n", node.Netns, "link", "set", "eth0", "up"},
			{"-n", node.Netns, "link", "set", "lo", "up"},
		} {
			if err := ip(args...); err != nil {
				return nil, simNode{}, teardown, err
			}
		}
		if err := raiseGSOMaxSize(underlay, port, WireGSOMaxSize); err != nil {
			return nil, simNode{}, teardown, err
		}
		if node.Name == "outside" {
			outside = node
			continue
		}
		nodes = append(nodes, node)
	}
	return nodes, outside, teardown, nil
}

func nth(p netip.Prefix, n int) (netip.Addr, bool) {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a, p.Contains(a)
}

// removePins deletes a node's pinned eBPF objects after its namespace is
// gone; they would only refer to deleted devices.
func removePins(dir string) {
	if dir != "" && strings.HasPrefix(filepath.Clean(dir), "/sys/fs/bpf/") {
		_ = os.RemoveAll(dir)
	}
}

// startNodes creates the default pool and the simulated nodes, each with
// its datapath, appending the processes to running. Without root it starts
// none and says so.
func startNodes(ctx context.Context, cfg Config, log *slog.Logger, logMu *sync.Mutex, exited chan error, running *[]*process) ([]simNode, simNode, []*process, error) {
	if cfg.Nodes == 0 {
		return nil, simNode{}, nil, nil
	}
	if os.Geteuid() != 0 {
		log.Warn("not root: simulated nodes and their datapaths are not started (they need network namespaces)")
		return nil, simNode{}, nil, nil
	}
	if err := ensureDefaultPool(ctx, "unix://"+cfg.ipamSocket(), cfg.PodCIDR, cfg.PodCIDR6); err != nil {
		return nil, simNode{}, nil, err
	}
	nodes, outside, teardown, err := setupNodes(cfg.NetnsPrefix, cfg.Nodes, cfg.UnderlayMTU)
	if err != nil {
		return nil, simNode{}, nil, err
	}
	*running = append(*running, &process{name: "namespaces", done: nil, cleanup: func() {
		teardown()
		for _, n := range nodes {
			removePins(cfg.pinDir(n))
			// The health endpoint's namespace outlives its agent by design.
			if err := health.RemoveNetns(cfg.agentStateDir(n)); err != nil {
				log.Warn("remove health endpoint namespace", "node", n.Name, "err", err)
			}
		}
	}})
	var procs []*process
	for _, n := range nodes {
		c := cfg.datapath(n)
		if err := os.MkdirAll(filepath.Dir(strings.TrimPrefix(c.Target, "unix://")), 0o755); err != nil {
			return nil, simNode{}, nil, err
		}
		p, err := start(cfg.BinDir, c, logMu, exited)
		if err != nil {
			return nil, simNode{}, nil, err
		}
		*running = append(*running, p)
		procs = append(procs, p)
	}
	for _, n := range nodes {
		if err := waitHealth(ctx, cfg.datapath(n).Target, insecure.NewCredentials(), cfg.ReadyTimeout, exited, serving); err != nil {
			return nil, simNode{}, nil, fmt.Errorf("datapath of %s did not become healthy: %w", n.Name, err)
		}
		log.Info("node ready", "node", n.Name, "underlay_ip", n.IP, "netns", n.Netns)
	}
	return nodes, outside, procs, nil
}

// ensureDefaultPool creates the default pool the nodes' first blocks come
// from (dual stack when cidr6 is set), unless a pool of that name exists.
func ensureDefaultPool(ctx context.Context, target, cidr, cidr6 string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := ipamv1alpha1.NewIPAMServiceClient(conn)
	_, err = c.GetPool(ctx, &ipamv1alpha1.GetPoolRequest{Name: "default"})
	if status.Code(err) == codes.NotFound {
		p := &ipamv1alpha1.Pool{Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{cidr}}}
		if cidr6 != "" {
			p.Ipv6 = &ipamv1alpha1.PoolFamily{Cidrs: []string{cidr6}}
		}
		_, err = c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: p})
	}
	if err != nil {
		return fmt.Errorf("default pool %s: %w", cidr, err)
	}
	return nil
}
