package bootstrap_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/axon-cni/axon/bpf/testpoll"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bootstrap"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/internal/daemon"
)

const nodeName = "node-a"

var nodeIP = netip.MustParseAddr("192.0.2.10")

// host is a daemon that records its hooks and checks; shutdown runs the
// hooks as the daemon does, last registered first.
type host struct {
	mu       sync.Mutex
	hooks    []func() error
	checks   map[string]daemon.Check
	grpc     *grpc.Server
	reg      *prometheus.Registry
	rechecks atomic.Int32
}

func newHost() *host {
	return &host{checks: map[string]daemon.Check{}, grpc: grpc.NewServer(), reg: prometheus.NewRegistry()}
}

func (h *host) OnShutdown(fn func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks = append(h.hooks, fn)
}

func (h *host) AddCheck(name string, fn daemon.Check) { h.checks[name] = fn }

func (h *host) GRPC() *grpc.Server { return h.grpc }

func (h *host) Registry() prometheus.Registerer { return h.reg }

func (h *host) Logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (h *host) Recheck() { h.rechecks.Add(1) }

func (h *host) shutdown(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	hooks := h.hooks
	h.hooks = nil
	h.mu.Unlock()
	for _, fn := range slices.Backward(hooks) {
		if err := fn(); err != nil {
			t.Errorf("shutdown hook: %v", err)
		}
	}
}

// node is the agent's dependencies on fakes. Each dependency's closer
// records its name and marks it closed; a call of a closed dependency is a
// violation: something that uses it outlived its close.
type node struct {
	nl         *nlfake.Fake
	bpf        *bpffake.Fake
	ipam       *fakeipam.IPAM
	mu         sync.Mutex
	closed     []string
	handles    int // nlfake's open handles when the namespaces closed
	violations []string
	stateDir   string
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{
		nl: nlfake.New(), bpf: bpffake.New(), stateDir: t.TempDir(),
		ipam: fakeipam.New(fakeipam.Config{Node: nodeName, Blocks: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}, PoolCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}),
	}
	n.bpf.SetInterfaces(func() map[string]int { return n.nl.Indexes(nlfake.NodeNS) })
	h, err := n.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0peer"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	n.nl.SetFail(func(_, op string) error { n.use("namespaces", op); return nil })
	n.bpf.SetFail(func(op string) error { n.use("datapath", op); return nil })
	n.ipam.SetFail(func(method string) error { n.use("ipam", method); return nil })
	return n
}

// use notes a call of dep, a violation once dep is closed.
func (n *node) use(dep, op string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Contains(n.closed, dep) {
		n.violations = append(n.violations, op+" of "+dep+" after its close")
	}
}

func (n *node) close(dep string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = append(n.closed, dep)
	if dep == "namespaces" {
		n.handles = n.nl.OpenHandles()
	}
	return nil
}

// closer is a dependency's Close.
type closer func() error

func (c closer) Close() error { return c() }

// datapath is bpffake as the daemon holds the loader.
type datapath struct {
	*bpffake.Fake
	closer
}

func (datapath) Stats() (map[string]uint64, error) { return map[string]uint64{}, nil }

// namespaces is nlfake as the daemon holds nl.Linux.
type namespaces struct {
	*nlfake.Fake
	closer
}

// deps opens n's fakes, counting the opens.
func (n *node) deps(opened *[]string) bootstrap.Deps {
	return bootstrap.Deps{
		IPAM: func() (ipamv1alpha1.IPAMServiceClient, io.Closer, error) {
			*opened = append(*opened, "ipam")
			return n.ipam, closer(func() error { return n.close("ipam") }), nil
		},
		Datapath: func(string) (bootstrap.Datapath, error) {
			*opened = append(*opened, "datapath")
			return datapath{n.bpf, func() error { return n.close("datapath") }}, nil
		},
		Namespaces: func() (bootstrap.Namespaces, error) {
			*opened = append(*opened, "namespaces")
			return namespaces{n.nl, func() error { return n.close("namespaces") }}, nil
		},
		Masquerade: rules{},
		Sysctl:     func(string, string) error { return nil },
	}
}

// rules are masquerade rules that install nothing.
type rules struct{}

func (rules) Apply([]netip.Prefix, string) error { return nil }

func (rules) Installed([]netip.Prefix) bool { return true }

func (n *node) options() bootstrap.Options {
	return bootstrap.Options{
		Agent: agent.Config{
			NodeName: nodeName, RoutingMode: nodedev.ModeTunnel, Masquerade: true,
			StateDir: n.stateDir, DeleteQueue: filepath.Join(n.stateDir, "deletes"), PinDir: "/unused",
			ReleaseRetry: 5 * time.Millisecond,
		},
		NodeIPs:            nodeIP.String(),
		GCMinAge:           time.Minute,
		HealthInterval:     5 * time.Millisecond,
		MasqueradeInterval: 5 * time.Millisecond,
		VanishedInterval:   5 * time.Millisecond,
		FlowGCInterval:     5 * time.Millisecond,
	}
}

// TestShutdownOrder: once the node is up and its loops busy, shutdown
// stops the loops, then closes the agent, the namespaces, the eBPF objects
// and the IPAM connection, in that order, nothing using any of them after
// its close.
func TestShutdownOrder(t *testing.T) {
	n := newNode(t)
	h := newHost()
	var opened []string
	if err := bootstrap.Run(t.Context(), h, n.options(), n.deps(&opened)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ipam", "datapath", "namespaces"}; !slices.Equal(opened, want) {
		t.Errorf("opened %v, want %v", opened, want)
	}
	check, ok := h.checks["node"]
	if !ok {
		t.Fatal("no node health check")
	}
	testpoll.Until(t, 5*time.Second, func() error { return check(t.Context()) })
	if h.rechecks.Load() == 0 {
		t.Error("the node came up without a health recheck")
	}
	// The loops at work: the health endpoint's veth exists, the
	// masquerade rules are synced.
	before := n.ipam.Calls("ListPools")
	testpoll.Until(t, 5*time.Second, func() error {
		if n.ipam.Calls("ListPools") < before+2 {
			return errors.New("the masquerade loop is not syncing")
		}
		return nil
	})

	h.shutdown(t)
	if want := []string{"namespaces", "datapath", "ipam"}; !slices.Equal(n.closed, want) {
		t.Errorf("closed %v, want %v", n.closed, want)
	}
	if n.handles != 0 {
		t.Errorf("%d netlink handles open when the namespaces closed, want 0 (the agent and its loops closed first)", n.handles)
	}
	// A loop still running would call a closed dependency within a few
	// of its 5 ms intervals.
	time.Sleep(50 * time.Millisecond)
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.violations) > 0 {
		t.Errorf("used after close: %v", n.violations)
	}
}

// TestRunErrors: a bad flag is a usage error (exit code 2) opening
// nothing; a node that cannot be set up is not (exit code 1), and what was
// opened is closed by the hooks the daemon runs on a Setup failure.
func TestRunErrors(t *testing.T) {
	errDial := &daemon.UsageError{Err: errors.New("--ipam-target: bad")}
	for _, tc := range []struct {
		name       string
		change     func(t *testing.T, o *bootstrap.Options, d *bootstrap.Deps)
		wantUsage  bool
		wantOpened []string
		wantClosed []string // last opened first; a failed open has nothing to close
	}{
		{name: "bad node IP", wantUsage: true, change: func(_ *testing.T, o *bootstrap.Options, _ *bootstrap.Deps) { o.NodeIPs = "192.0.2.10, nope" }},
		{name: "bad routing mode", wantUsage: true, change: func(_ *testing.T, o *bootstrap.Options, _ *bootstrap.Deps) { o.Agent.RoutingMode = "carrier-pigeon" }},
		{name: "zero reconcile interval", wantUsage: true, change: func(_ *testing.T, o *bootstrap.Options, _ *bootstrap.Deps) { o.VanishedInterval = 0 }},
		{name: "zero flow GC interval", wantUsage: true, change: func(_ *testing.T, o *bootstrap.Options, _ *bootstrap.Deps) { o.FlowGCInterval = 0 }},
		{name: "bad IPAM target", wantUsage: true, change: func(_ *testing.T, _ *bootstrap.Options, d *bootstrap.Deps) {
			d.IPAM = func() (ipamv1alpha1.IPAMServiceClient, io.Closer, error) { return nil, nil, errDial }
		}},
		{name: "datapath fails to load", wantOpened: []string{"ipam", "datapath"}, wantClosed: []string{"ipam"}, change: func(_ *testing.T, _ *bootstrap.Options, d *bootstrap.Deps) {
			open := d.Datapath
			d.Datapath = func(dir string) (bootstrap.Datapath, error) { _, _ = open(dir); return nil, unix.EPERM }
		}},
		{name: "agent cannot be made", wantOpened: []string{"ipam", "datapath", "namespaces"}, wantClosed: []string{"namespaces", "datapath", "ipam"}, change: func(t *testing.T, o *bootstrap.Options, _ *bootstrap.Deps) {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			o.Agent.StateDir = filepath.Join(file, "state")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			h := newHost()
			var opened []string
			opts, deps := n.options(), n.deps(&opened)
			tc.change(t, &opts, &deps)
			err := bootstrap.Run(t.Context(), h, opts, deps)
			if err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			if usage := errors.As(err, new(*daemon.UsageError)); usage != tc.wantUsage {
				t.Errorf("Run = %v: a usage error %v, want %v", err, usage, tc.wantUsage)
			}
			if !slices.Equal(opened, tc.wantOpened) {
				t.Errorf("opened %v, want %v", opened, tc.wantOpened)
			}
			h.shutdown(t)
			if !slices.Equal(n.closed, tc.wantClosed) {
				t.Errorf("closed %v, want %v", n.closed, tc.wantClosed)
			}
			if _, ok := h.checks["node"]; ok {
				t.Error("a failed Run added the node check")
			}
		})
	}
}
