package endpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// A netlink call failing half-way through the wiring leaves nothing
// behind: no veth in either namespace, no map entry, no record, and the
// allocation released.
func TestCreateNetlinkFailureLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  bool // the call is in the pod's namespace, else the node's
		op   string
		n    int
	}{
		{"PodDefaultRoute", true, "RouteReplace", 2},
		{"PodSecondGatewayRoute", true, "RouteReplace", 3},
		{"PodNeighbour", true, "NeighSet", 1},
		{"PodSecondNeighbour", true, "NeighSet", 2},
		{"PodSecondAddress", true, "AddrAdd", 2},
		{"PodLinkUp", true, "LinkSetUp", 1},
		{"HostLinkUp", false, "LinkSetUp", 1},
		{"HostSecondRoute", false, "RouteReplace", 2},
		{"VethAdd", false, "LinkAdd", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{dualStack: true})
			ns := e.podNS("pod1")
			where := nlfake.NodeNS
			if tc.pod {
				where = ns
			}
			e.nl.FailOn(where, tc.op, tc.n, errInjected)
			_, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", ns))
			if err == nil {
				t.Fatalf("CreateEndpoint succeeded with %s #%d failing", tc.op, tc.n)
			}
			if e.nl.Calls(where, tc.op) < tc.n {
				t.Fatalf("%s called %d times; the injected failure never happened", tc.op, e.nl.Calls(where, tc.op))
			}
			e.assertNoEndpoint(attachment("c1", "eth0"), ns)
			e.assertEmptyNode()
			if q := e.queuedReleases(); len(q) != 0 {
				t.Errorf("releases queued although IPAM answered: %v", q)
			}
			if n := e.nl.OpenHandles(); n != 1 { // the Manager's own node handle
				t.Errorf("%d netlink handles open, want the Manager's one", n)
			}
		})
	}
}

// When IPAM is down as a failed create is rolled back, the release is
// queued and done by the next retry.
func TestCreateFailureQueuesReleaseWhenIPAMDown(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns := e.podNS("pod1")
	e.nl.FailOn(ns, "NeighSet", 1, errInjected)
	e.ipam.FailNext("ReleaseIP", 1, errUnavailable)
	if _, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", ns)); err == nil {
		t.Fatal("CreateEndpoint succeeded with NeighSet failing")
	}
	if l := e.linkNames(nlfake.NodeNS); len(l) != 0 {
		t.Errorf("links left: %v", l)
	}
	if len(e.ipam.Allocations()) != 1 {
		t.Fatalf("allocations %v; want the one IPAM could not release", e.ipam.Allocations())
	}
	if q := e.queuedReleases(); len(q) != 1 || q[0] != HostName(attachment("c1", "eth0"))+".json" {
		t.Fatalf("queued releases %v, want the endpoint's", q)
	}
	e.m.RetryReleases(t.Context())
	e.assertEmptyNode()
	if q := e.queuedReleases(); len(q) != 0 {
		t.Errorf("release still queued after a successful retry: %v", q)
	}
}

// A map write failing rolls the endpoint back the same way, and leaves the
// endpoints already there alone.
func TestCreateMapFailureRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(e *testEnv)
		want   error // the sentinel the error wraps, if any
	}{
		{"SecondPutEndpoint", func(e *testEnv) { e.bpf.FailOn(bpffake.OpPutEndpoint, 2, errInjected) }, errInjected},
		{"PutDevice", func(e *testEnv) { e.bpf.FailOn(bpffake.OpPutDevice, 1, errInjected) }, errInjected},
		{"AttachEndpoint", func(e *testEnv) { e.bpf.FailOn(bpffake.OpAttachEndpoint, 1, errInjected) }, errInjected},
		// Pod a's two address entries leave one place in an endpoint map
		// of three: pod b's first address fits, its second does not.
		{"FullMap", func(e *testEnv) { e.bpf.SetCapacity(3) }, ErrMapFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{dualStack: true})
			nsA, nsB := e.podNS("podA"), e.podNS("podB")
			epA := e.create("a", "eth0", nsA)
			devsA, entriesA := e.bpf.Devices(), e.bpf.Endpoints()

			tc.inject(e)
			if _, err := e.m.CreateEndpoint(t.Context(), createReq("b", "eth0", nsB)); !errors.Is(err, tc.want) {
				t.Fatalf("CreateEndpoint with a map write failing: %v, want %v", err, tc.want)
			}
			e.assertNoEndpoint(attachment("b", "eth0"), nsB)
			if l := e.linkNames(nlfake.NodeNS); len(l) != 1 || l[0] != HostName(epA.GetAttachment()) {
				t.Errorf("node links %v, want pod a's veth only", l)
			}
			if got := e.bpf.Devices(); len(got) != len(devsA) {
				t.Errorf("device entries %v, want pod a's %v", got, devsA)
			}
			if got := e.bpf.Endpoints(); len(got) != len(entriesA) {
				t.Errorf("endpoint entries %v, want pod a's %v", got, entriesA)
			}
			if len(e.records()) != 1 || len(e.ipam.Allocations()) != 1 {
				t.Errorf("records %v, allocations %v; want pod a's only", e.records(), e.ipam.Allocations())
			}
			// Pod b's key went back: the next pod gets a key of its own
			// that is not pod a's.
			e.bpf.SetCapacity(0)
			e.create("b", "eth0", nsB)
			devs := e.bpf.Devices()
			if devs[e.hostIndex(attachment("b", "eth0"))] == devs[e.hostIndex(epA.GetAttachment())] {
				t.Errorf("pods a and b share a key after the retry: %v", devs)
			}
		})
	}
}

// A record that cannot be written rolls the endpoint back.
func TestCreateRecordFailureRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sabotage func(t *testing.T, e *testEnv)
	}{
		// Root ignores a read-only directory: make the temporary file of
		// the atomic write a directory instead.
		{"TempFileIsADirectory", func(t *testing.T, e *testEnv) {
			if err := os.Mkdir(filepath.Join(e.stateDir, HostName(attachment("c1", "eth0"))+".json.tmp"), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{"StateDirIsAFile", func(t *testing.T, e *testEnv) {
			if err := os.Remove(e.stateDir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(e.stateDir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{})
			ns := e.podNS("pod1")
			tc.sabotage(t, e)
			if _, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", ns)); err == nil {
				t.Fatal("CreateEndpoint succeeded without a record")
			}
			if l := e.linkNames(nlfake.NodeNS); len(l) != 0 {
				t.Errorf("links left: %v", l)
			}
			if l := e.linkNames(ns); len(l) != 0 {
				t.Errorf("pod links left: %v", l)
			}
			if eps, devs := e.bpf.Endpoints(), e.bpf.Devices(); len(eps) != 0 || len(devs) != 0 {
				t.Errorf("map entries left: endpoints %v, devices %v", eps, devs)
			}
			if a := e.ipam.Allocations(); len(a) != 0 {
				t.Errorf("allocations left: %v", a)
			}
		})
	}
}
