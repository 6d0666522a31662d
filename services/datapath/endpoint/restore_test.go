package endpoint

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// restart replaces the Manager with a new one on the same state, as a
// restarted agent, and runs its start-up reconcile. keepMaps keeps the
// eBPF state (pinned maps); without it the maps start empty (pins lost).
func (e *testEnv) restart(keepMaps bool) map[string]*datapathv1alpha1.Endpoint {
	e.t.Helper()
	e.m = e.newManager(keepMaps)
	eps, err := e.m.Restore(e.t.Context())
	if err != nil {
		e.t.Fatalf("Restore: %v", err)
	}
	return eps
}

// assertWired checks ep's map entries, device entry and program match its
// veth and record.
func (e *testEnv) assertWired(ep *datapathv1alpha1.Endpoint) {
	e.t.Helper()
	att := ep.GetAttachment()
	idx := e.hostIndex(att)
	rec := e.loadRecord(att)
	for _, p := range Addrs(ep) {
		entry, err := e.bpf.Endpoint(p.Addr())
		if err != nil {
			e.t.Errorf("%s: no map entry for %s: %v", att.GetContainerId(), p.Addr(), err)
			continue
		}
		if entry.Ifindex != idx || entry.ID != ep.GetEndpointId() || entry.HostMAC.String() != rec.HostMAC || entry.PodMAC.String() != rec.PodMAC {
			e.t.Errorf("%s: map entry for %s = %+v; want ifindex %d, id %d, MACs from the record %+v", att.GetContainerId(), p.Addr(), entry, idx, ep.GetEndpointId(), rec)
		}
	}
	if key, ok := e.bpf.Devices()[idx]; !ok || key != rec.PodKey || key == 0 {
		e.t.Errorf("%s: device entry %d (present %v), want the recorded pod key %d", att.GetContainerId(), key, ok, rec.PodKey)
	}
	if !e.bpf.IsEndpointDevice(idx) {
		e.t.Errorf("%s: no program on its veth", att.GetContainerId())
	}
}

// A restart that lost the pins writes every kept endpoint's map entries,
// device entry (with its recorded pod key) and program again; new
// endpoints get IDs after the restored ones.
func TestRestoreRewiresKeptEndpoints(t *testing.T) {
	e := newTestManager(t, testOpts{dualStack: true})
	ns := e.podNS("a")
	a0 := e.create("a", "eth0", ns)
	a1 := e.create("a", "net1", ns)
	b := e.create("b", "eth0", e.podNS("b"))

	eps := e.restart(false)
	if len(eps) != 3 {
		t.Fatalf("restored %d endpoints, want 3", len(eps))
	}
	for _, ep := range []*datapathv1alpha1.Endpoint{a0, a1, b} {
		e.assertWired(ep)
	}
	devs := e.bpf.Devices()
	if devs[e.hostIndex(a0.GetAttachment())] != devs[e.hostIndex(a1.GetAttachment())] {
		t.Errorf("pod a's attachments lost their shared key: %v", devs)
	}
	c := e.create("c", "eth0", e.podNS("c"))
	if c.GetEndpointId() <= max(a0.GetEndpointId(), a1.GetEndpointId(), b.GetEndpointId()) {
		t.Errorf("new endpoint got ID %d, not after the restored ones", c.GetEndpointId())
	}
	keyC := e.bpf.Devices()[e.hostIndex(c.GetAttachment())]
	if keyC == devs[e.hostIndex(a0.GetAttachment())] || keyC == devs[e.hostIndex(b.GetAttachment())] {
		t.Errorf("new pod c got key %d, which a restored pod holds: %v", keyC, devs)
	}
}

// An endpoint whose veth went while no agent ran (its pod's namespace was
// deleted) is removed as a DEL would.
func TestRestoreRemovesEndpointWithoutVeth(t *testing.T) {
	e := newTestManager(t, testOpts{})
	nsA := e.podNS("a")
	a := e.create("a", "eth0", nsA)
	b := e.create("b", "eth0", e.podNS("b"))
	e.nl.DeleteNamespace(nsA)
	if _, ok := e.nl.Link(nlfake.NodeNS, HostName(a.GetAttachment())); ok {
		t.Fatal("the fake kept the veth of a deleted namespace")
	}

	eps := e.restart(true)
	if len(eps) != 1 || eps[HostName(b.GetAttachment())] == nil {
		t.Fatalf("restored %v, want pod b's endpoint alone", eps)
	}
	e.assertNoEndpoint(a.GetAttachment(), "")
	for _, p := range Addrs(a) {
		if _, err := e.bpf.Endpoint(p.Addr()); err == nil {
			t.Errorf("map entry of pod a's %s kept", p.Addr())
		}
	}
	e.assertWired(b)
	if a := e.ipam.Allocations(); len(a) != 1 || a[0].GetHandle().GetContainerId() != "b" {
		t.Errorf("allocations %v, want pod b's alone", a)
	}
}

// Map entries of no record are dropped; so are lxc veths carrying Axon's
// program without a record (a crash before the record), but not an lxc
// veth without it (Cilium names its pods' veths the same way).
func TestRestoreRemovesWhatNoRecordNames(t *testing.T) {
	e := newTestManager(t, testOpts{})
	orphan := e.create("orphan", "eth0", e.podNS("orphan"))
	kept := e.create("kept", "eth0", e.podNS("kept"))
	orphanIdx := e.hostIndex(orphan.GetAttachment())
	if err := os.Remove(filepath.Join(e.stateDir, HostName(orphan.GetAttachment())+".json")); err != nil {
		t.Fatal(err)
	}
	stray := netip.MustParseAddr("10.244.1.200")
	if err := e.bpf.PutEndpoint(stray, bpfmaps.Endpoint{Ifindex: 1, PodMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	// Cilium's pod veth: an lxc name, no Axon program.
	ciliumNS := e.podNS("cilium-pod")
	node, err := e.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	pod, err := e.nl.Open(ciliumNS)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	const ciliumName = "lxc0123456789ab"
	if err := node.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ciliumName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod.Ref)}); err != nil {
		t.Fatal(err)
	}

	eps := e.restart(true)
	if len(eps) != 1 || eps[HostName(kept.GetAttachment())] == nil {
		t.Fatalf("restored %v, want the kept endpoint alone", eps)
	}
	if _, ok := e.nl.Link(nlfake.NodeNS, HostName(orphan.GetAttachment())); ok {
		t.Error("orphan veth carrying the program kept")
	}
	if _, ok := e.nl.Link(nlfake.NodeNS, ciliumName); !ok {
		t.Error("Cilium's veth removed")
	}
	if _, ok := e.bpf.Devices()[orphanIdx]; ok {
		t.Error("orphan's device entry kept")
	}
	want := Addrs(kept)
	got := e.bpf.Endpoints()
	if len(got) != len(want) {
		t.Errorf("endpoint entries %v, want the kept endpoint's %v", got, want)
	}
	if _, err := e.bpf.Endpoint(stray); err == nil {
		t.Errorf("stray entry %s kept", stray)
	}
	e.assertWired(kept)
}

// Recorded pod keys are taken back before any record without one (an
// earlier version's) is given a key, so the two never collide and a pod
// keeps its key across restarts, whatever order the records come in.
func TestRestorePodKeys(t *testing.T) {
	for i := range 8 { // the records are visited in map order
		e := newTestManager(t, testOpts{})
		a := e.create("a", "eth0", e.podNS("a"))
		b := e.create("b", "eth0", e.podNS("b"))
		keyA := e.loadRecord(a.GetAttachment()).PodKey
		// Pod a's record is an earlier version's; pod b's holds the key
		// a new agent would hand out first.
		e.rewriteRecord(a.GetAttachment(), func(r *record) { r.PodKey = 0 })
		e.rewriteRecord(b.GetAttachment(), func(r *record) { r.PodKey = keyA })

		e.restart(false)
		devs := e.bpf.Devices()
		gotA, gotB := devs[e.hostIndex(a.GetAttachment())], devs[e.hostIndex(b.GetAttachment())]
		if gotB != keyA {
			t.Errorf("round %d: pod b has key %d, want its recorded %d", i, gotB, keyA)
		}
		if gotA == 0 || gotA == gotB {
			t.Errorf("round %d: pod a got key %d, pod b holds %d", i, gotA, gotB)
		}
		if rk := e.loadRecord(a.GetAttachment()).PodKey; rk != gotA {
			t.Errorf("round %d: pod a's new key %d not recorded (record has %d)", i, gotA, rk)
		}
		c := e.create("c", "eth0", e.podNS("c"))
		if gotC := e.bpf.Devices()[e.hostIndex(c.GetAttachment())]; slices.Contains([]uint32{gotA, gotB}, gotC) {
			t.Errorf("round %d: new pod c got key %d, held by a restored pod (%d, %d)", i, gotC, gotA, gotB)
		}
	}
}

// A damaged record is set aside without stopping the restore of the rest.
func TestRestoreSetsDamagedRecordAside(t *testing.T) {
	e := newTestManager(t, testOpts{})
	a := e.create("a", "eth0", e.podNS("a"))
	damaged := filepath.Join(e.stateDir, "lxc00000000dead.json")
	if err := os.WriteFile(damaged, []byte(`{"endpoint": {"attach`), 0o600); err != nil {
		t.Fatal(err)
	}
	eps := e.restart(false)
	if len(eps) != 1 || eps[HostName(a.GetAttachment())] == nil {
		t.Fatalf("restored %v, want pod a's endpoint", eps)
	}
	if _, err := os.Stat(damaged + ".bad"); err != nil {
		t.Errorf("damaged record not set aside: %v", err)
	}
	if _, err := os.Stat(damaged); !os.IsNotExist(err) {
		t.Errorf("damaged record still in place: %v", err)
	}
	e.assertWired(a)
}

// rewriteRecord changes att's record as an earlier agent could have
// written it.
func (e *testEnv) rewriteRecord(att *datapathv1alpha1.Attachment, change func(*record)) {
	e.t.Helper()
	rec, _, err := e.m.store.load(HostName(att))
	if err != nil {
		e.t.Fatal(err)
	}
	change(rec)
	if err := e.m.store.save(HostName(att), rec); err != nil {
		e.t.Fatal(err)
	}
}

// With IPAM down at start-up, an endpoint whose veth went is still
// removed, and its release queued for the retry.
func TestRestoreQueuesReleaseWhenIPAMDown(t *testing.T) {
	e := newTestManager(t, testOpts{})
	nsA := e.podNS("a")
	a := e.create("a", "eth0", nsA)
	e.nl.DeleteNamespace(nsA)
	e.ipam.FailNext("ReleaseIP", 1, errUnavailable)
	if eps := e.restart(false); len(eps) != 0 {
		t.Fatalf("restored %v, want nothing", eps)
	}
	if r := e.records(); len(r) != 0 {
		t.Errorf("records left: %v", r)
	}
	if q := e.queuedReleases(); len(q) != 1 || q[0] != HostName(a.GetAttachment())+".json" {
		t.Fatalf("queued releases %v, want pod a's", q)
	}
	e.m.RetryReleases(t.Context())
	e.assertEmptyNode()
}
