package endpoint

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// The node's blocks in the fake IPAM: the first address after the network
// address is the router IP (the pods' gateway).
var (
	block4   = netip.MustParsePrefix("10.244.1.0/24")
	block6   = netip.MustParsePrefix("fd00:244:1::/64")
	gateway4 = netip.MustParseAddr("10.244.1.1")
	gateway6 = netip.MustParseAddr("fd00:244:1::1")
)

const (
	testNode = "node-a"
	nodeMTU  = 1450
)

// errInjected is the failure the tests inject into the fakes.
var errInjected = errors.New("injected failure")

// errUnavailable is IPAM not answering.
var errUnavailable = status.Error(codes.Unavailable, "IPAM is down")

// testOpts shapes a test manager; the zero value is a single-stack IPv4
// node, ready, with the eBPF datapath.
type testOpts struct {
	dualStack bool
	noBPF     bool
	ready     func() error
	reserved  func(*datapathv1alpha1.Attachment) bool
	logs      io.Writer // where the manager logs, as text; nil discards
	// ipam, if set, is the IPAM the manager calls, given the fake (say,
	// the fake behind a wrapper that hangs); nil calls the fake itself.
	ipam func(*fakeipam.IPAM) IPAM
}

// testEnv is a Manager on the fakes, with what the tests inspect.
type testEnv struct {
	t        *testing.T
	opts     testOpts
	m        *Manager
	nl       *nlfake.Fake
	bpf      *bpffake.Fake
	ipam     *fakeipam.IPAM
	stateDir string
	queueDir string
	nsDir    string
}

// newTestManager builds a Manager on nlfake, bpffake and fakeipam, with the
// real veth.Plumber on the netlink fake.
func newTestManager(t *testing.T, opts testOpts) *testEnv {
	t.Helper()
	blocks := []netip.Prefix{block4}
	if opts.dualStack {
		blocks = append(blocks, block6)
	}
	ipam := fakeipam.New(fakeipam.Config{Node: testNode, Blocks: blocks})
	if _, err := ipam.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{
		Node: &ipamv1alpha1.Node{Name: testNode}, AllowMissing: true,
	}); err != nil {
		t.Fatalf("register the node: %v", err)
	}
	dir := t.TempDir()
	e := &testEnv{
		t: t, opts: opts, nl: nlfake.New(), ipam: ipam,
		stateDir: filepath.Join(dir, "state"), queueDir: filepath.Join(dir, "delqueue"), nsDir: filepath.Join(dir, "netns"),
	}
	for _, d := range []string{e.stateDir, e.queueDir, e.nsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e.m = e.newManager(false)
	return e
}

// newManager returns a new Manager on the same fakes and state directory,
// as a restarted agent is. keepMaps keeps e.bpf (the pinned maps survived);
// otherwise e.bpf becomes a new, empty datapath (pins lost).
func (e *testEnv) newManager(keepMaps bool) *Manager {
	e.t.Helper()
	node, err := e.nl.Node()
	if err != nil {
		e.t.Fatalf("node handle: %v", err)
	}
	e.t.Cleanup(node.Close)
	cfg := Config{NodeName: testNode, StateDir: e.stateDir, MTU: nodeMTU, DeleteQueue: e.queueDir, Reserved: e.opts.reserved}
	log := slog.New(slog.DiscardHandler)
	if e.opts.logs != nil {
		log = slog.New(slog.NewTextHandler(e.opts.logs, nil))
	}
	plumber := &veth.Plumber{Namespaces: e.nl}
	var ipam IPAM = e.ipam
	if e.opts.ipam != nil {
		ipam = e.opts.ipam(e.ipam)
	}
	if e.opts.noBPF {
		return New(cfg, ipam, plumber, node, nil, e.opts.ready, log)
	}
	if !keepMaps || e.bpf == nil {
		e.bpf = bpffake.New()
		e.bpf.SetInterfaces(func() map[string]int { return e.nl.Indexes(nlfake.NodeNS) })
	}
	return New(cfg, ipam, plumber, node, e.bpf, e.opts.ready, log)
}

// podNS makes a pod network namespace: a file on disk (the path the
// runtime gives) that the netlink fake knows as a namespace.
func (e *testEnv) podNS(name string) string {
	e.t.Helper()
	path := filepath.Join(e.nsDir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.nl.AddNamespace(path)
	return path
}

func attachment(id, ifName string) *datapathv1alpha1.Attachment {
	return &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: ifName}
}

func createReq(id, ifName, netns string) *datapathv1alpha1.CreateEndpointRequest {
	return &datapathv1alpha1.CreateEndpointRequest{
		Attachment: attachment(id, ifName), NetnsPath: netns,
		PodNamespace: "default", PodName: "pod-" + id, Network: "axon",
	}
}

// create wires container id's interface ifName into netns, failing the
// test on an error.
func (e *testEnv) create(id, ifName, netns string) *datapathv1alpha1.Endpoint {
	e.t.Helper()
	ep, err := e.m.CreateEndpoint(e.t.Context(), createReq(id, ifName, netns))
	if err != nil {
		e.t.Fatalf("create %s/%s: %v", id, ifName, err)
	}
	return ep
}

// records lists the endpoint record files in the state directory.
func (e *testEnv) records() []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.stateDir)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if strings.HasSuffix(en.Name(), ".json") {
			out = append(out, en.Name())
		}
	}
	return out
}

// queuedReleases lists the files in the release queue.
func (e *testEnv) queuedReleases() []string {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.stateDir, "releases"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	return out
}

// linkNames lists the links of namespace ns other than loopback.
func (e *testEnv) linkNames(ns string) []string {
	var out []string
	for _, l := range e.nl.Links(ns) {
		if n := l.Attrs().Name; n != "lo" {
			out = append(out, n)
		}
	}
	return out
}

// assertNoEndpoint checks that nothing of attachment att into netns is
// left: no veth on either side, no host route, no map entry of its
// addresses or device, no record, and no IPAM
// allocation.
func (e *testEnv) assertNoEndpoint(att *datapathv1alpha1.Attachment, netns string) {
	e.t.Helper()
	host := HostName(att)
	if _, ok := e.nl.Link(nlfake.NodeNS, host); ok {
		e.t.Errorf("host veth %s left in the node namespace", host)
	}
	if netns != "" {
		if _, ok := e.nl.Link(netns, att.GetInterfaceName()); ok {
			e.t.Errorf("pod interface %s left in %s", att.GetInterfaceName(), netns)
		}
		if rs := e.nl.Routes(netns); len(rs) != 0 {
			e.t.Errorf("routes left in the pod: %v", rs)
		}
		if ns := e.nl.Neighs(netns); len(ns) != 0 {
			e.t.Errorf("neighbours left in the pod: %v", ns)
		}
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, host+".json")); !errors.Is(err, os.ErrNotExist) {
		e.t.Errorf("record of %s left (stat: %v)", host, err)
	}
	e.settleReleases()
	for _, a := range e.ipam.Allocations() {
		if h := a.GetHandle(); h.GetContainerId() == att.GetContainerId() && h.GetInterfaceName() == att.GetInterfaceName() {
			e.t.Errorf("IPAM allocation of %s/%s left: %v", h.GetContainerId(), h.GetInterfaceName(), a.GetAddresses())
		}
	}
}

// assertEmptyNode checks the node holds no endpoint at all: no veth, no
// route, no map entry, no record, no allocation.
func (e *testEnv) assertEmptyNode() {
	e.t.Helper()
	if l := e.linkNames(nlfake.NodeNS); len(l) != 0 {
		e.t.Errorf("links left in the node namespace: %v", l)
	}
	if rs := e.nl.Routes(nlfake.NodeNS); len(rs) != 0 {
		e.t.Errorf("routes left in the node namespace: %v", rs)
	}
	if e.bpf != nil {
		if eps := e.bpf.Endpoints(); len(eps) != 0 {
			e.t.Errorf("endpoint map entries left: %v", eps)
		}
		if devs := e.bpf.Devices(); len(devs) != 0 {
			e.t.Errorf("device map entries left: %v", devs)
		}
	}
	if r := e.records(); len(r) != 0 {
		e.t.Errorf("records left: %v", r)
	}
	e.settleReleases()
	if a := e.ipam.Allocations(); len(a) != 0 {
		e.t.Errorf("IPAM allocations left: %v", a)
	}
}

// settleReleases does the queued IPAM releases, as the agent's release
// worker does soon after each DEL: DELs leave releases to it.
func (e *testEnv) settleReleases() {
	e.t.Helper()
	e.m.RetryReleases(e.t.Context())
}

// hostIndex is the ifindex of att's host veth, failing the test without
// one.
func (e *testEnv) hostIndex(att *datapathv1alpha1.Attachment) int {
	e.t.Helper()
	l, ok := e.nl.Link(nlfake.NodeNS, HostName(att))
	if !ok {
		e.t.Fatalf("no host veth %s", HostName(att))
	}
	return l.Attrs().Index
}

// loadRecord reads att's record.
func (e *testEnv) loadRecord(att *datapathv1alpha1.Attachment) *record {
	e.t.Helper()
	rec, _, err := e.m.store.load(HostName(att))
	if err != nil {
		e.t.Fatalf("record of %s: %v", HostName(att), err)
	}
	return rec
}
