package endpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// Delete removes the veth, the map entries and the record, and releases
// the allocation; the other pod's endpoint stays whole.
func TestDeleteRemovesEverything(t *testing.T) {
	e := newTestManager(t, testOpts{dualStack: true})
	nsA, nsB := e.podNS("podA"), e.podNS("podB")
	epA := e.create("a", "eth0", nsA)
	epB := e.create("b", "eth0", nsB)
	idxB := e.hostIndex(epB.GetAttachment())

	got, err := e.m.DeleteEndpoint(t.Context(), attachment("a", "eth0"))
	if err != nil {
		t.Fatalf("DeleteEndpoint: %v", err)
	}
	if !proto.Equal(got, epA) {
		t.Errorf("DeleteEndpoint returned %v, want the deleted endpoint %v", got, epA)
	}
	e.assertNoEndpoint(epA.GetAttachment(), nsA)
	for _, p := range Addrs(epA) {
		if _, err := e.bpf.Endpoint(p.Addr()); err == nil {
			t.Errorf("map entry of %s left", p.Addr())
		}
	}
	if devs := e.bpf.Devices(); len(devs) != 1 || devs[idxB] == 0 {
		t.Errorf("device entries %v, want pod b's (ifindex %d) only", devs, idxB)
	}
	if eps := e.bpf.Endpoints(); len(eps) != len(Addrs(epB)) {
		t.Errorf("endpoint entries %v, want pod b's %v", eps, Addrs(epB))
	}
	if a := e.ipam.Allocations(); len(a) != 1 || a[0].GetHandle().GetContainerId() != "b" {
		t.Errorf("allocations %v, want pod b's only", a)
	}
	if q := e.queuedReleases(); len(q) != 0 {
		t.Errorf("releases queued: %v", q)
	}
}

// Deleting what does not exist is success: a DEL may come twice, or for a
// failed ADD.
func TestDeleteUnknownIsSuccess(t *testing.T) {
	e := newTestManager(t, testOpts{})
	e.create("b", "eth0", e.podNS("podB"))
	for range 2 {
		ep, err := e.m.DeleteEndpoint(t.Context(), attachment("a", "eth0"))
		if err != nil || ep != nil {
			t.Fatalf("DeleteEndpoint of an unknown attachment = %v, %v; want nil, nil", ep, err)
		}
	}
	if len(e.records()) != 1 || len(e.ipam.Allocations()) != 1 || len(e.linkNames(nlfake.NodeNS)) != 1 {
		t.Errorf("pod b's endpoint touched: records %v, allocations %v", e.records(), e.ipam.Allocations())
	}
}

// The release guards against a newer allocation of the same handle: it
// carries the recorded sequence.
func TestDeleteReleasesRecordedSequence(t *testing.T) {
	e := newTestManager(t, testOpts{})
	att := attachment("a", "eth0")
	e.create("a", "eth0", e.podNS("podA"))
	rec := e.loadRecord(att)
	// IPAM moved on: the handle's allocation was released and made again
	// (say by another agent after a GC) under a new sequence.
	if _, err := e.ipam.ReleaseIP(t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "a", InterfaceName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	again, err := e.ipam.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "a", InterfaceName: "eth0"}, Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetAllocation().GetSequence() == rec.IPAMSequence {
		t.Fatalf("fake IPAM reused sequence %d", rec.IPAMSequence)
	}
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err != nil {
		t.Fatal(err)
	}
	if a := e.ipam.Allocations(); len(a) != 1 || a[0].GetSequence() != again.GetAllocation().GetSequence() {
		t.Errorf("allocations %v; the newer allocation (sequence %d) must survive a release of sequence %d", a, again.GetAllocation().GetSequence(), rec.IPAMSequence)
	}
}

// A DEL queues the release on disk, whole, and leaves it to the release
// worker (RetryReleases): with IPAM down the release stays queued, and the
// next retry that IPAM answers does it and removes the file.
func TestDeleteQueuesRelease(t *testing.T) {
	e := newTestManager(t, testOpts{})
	att := attachment("a", "eth0")
	ns := e.podNS("podA")
	e.create("a", "eth0", ns)
	seq := e.loadRecord(att).IPAMSequence

	select {
	case <-e.m.ReleasesQueued():
		t.Fatal("the release worker woken before any DEL")
	default:
	}
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err != nil {
		t.Fatalf("DeleteEndpoint: %v", err)
	}
	if n := e.ipam.Calls("ReleaseIP"); n != 0 {
		t.Errorf("DeleteEndpoint called ReleaseIP %d times; want the release left to the worker", n)
	}
	select {
	case <-e.m.ReleasesQueued():
	default:
		t.Error("the release worker was not woken")
	}
	if l := e.linkNames(nlfake.NodeNS); len(l) != 0 {
		t.Errorf("links left: %v", l)
	}
	if r := e.records(); len(r) != 0 {
		t.Errorf("records left: %v", r)
	}
	q := e.queuedReleases()
	if len(q) != 1 || q[0] != HostName(att)+".json" {
		t.Fatalf("queued releases %v, want %s.json alone (no temporary file)", q, HostName(att))
	}
	b, err := os.ReadFile(filepath.Join(e.stateDir, "releases", q[0]))
	if err != nil {
		t.Fatal(err)
	}
	var p pendingRelease
	if err := json.Unmarshal(b, &p); err != nil || p != (pendingRelease{"a", "eth0", seq}) {
		t.Fatalf("queued release %s = %+v (%v), want a/eth0 sequence %d", b, p, err, seq)
	}

	// IPAM down: the release stays queued.
	e.ipam.FailNext("ReleaseIP", 1, errUnavailable)
	e.m.RetryReleases(t.Context())
	if len(e.queuedReleases()) != 1 || len(e.ipam.Allocations()) != 1 {
		t.Fatalf("after a failed retry: queued %v, allocations %v; want both kept", e.queuedReleases(), e.ipam.Allocations())
	}
	e.m.RetryReleases(t.Context())
	e.assertEmptyNode()
	if q := e.queuedReleases(); len(q) != 0 {
		t.Errorf("queued releases %v after a successful retry", q)
	}
}

// hungIPAM answers no ReleaseIP: each waits until its caller gives up, as
// an IPAM whose connection accepts and never answers does.
type hungIPAM struct {
	IPAM
	releases *atomic.Int32 // ReleaseIP calls
}

func (h hungIPAM) ReleaseIP(ctx context.Context, _ *ipamv1alpha1.ReleaseIPRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ReleaseIPResponse, error) {
	h.releases.Add(1)
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// With IPAM hung, a DEL returns at once with the pod's networking gone, and
// its release survives a restart: the next agent does it once IPAM
// answers. (Issue 17, item 3: the DEL waited for its whole deadline.)
func TestDeleteDoesNotWaitForIPAM(t *testing.T) {
	e := newTestManager(t, testOpts{dualStack: true, ipam: func(f *fakeipam.IPAM) IPAM { return hungIPAM{f, new(atomic.Int32)} }})
	ns := e.podNS("podA")
	ep := e.create("a", "eth0", ns)

	const deadline = 10 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	if _, err := e.m.DeleteEndpoint(ctx, ep.GetAttachment()); err != nil {
		t.Fatalf("DeleteEndpoint with IPAM hung: %v", err)
	}
	if took := time.Since(start); took >= deadline/2 {
		t.Errorf("DeleteEndpoint with IPAM hung took %s; want it well before the %s deadline", took, deadline)
	}
	for _, p := range Addrs(ep) {
		if _, err := e.bpf.Endpoint(p.Addr()); err == nil {
			t.Errorf("map entry of %s left", p.Addr())
		}
	}
	if l := e.linkNames(nlfake.NodeNS); len(l) != 0 {
		t.Errorf("links left: %v", l)
	}
	if q := e.queuedReleases(); len(q) != 1 {
		t.Fatalf("queued releases %v, want the DEL's", q)
	}

	// The agent restarts before IPAM answers: the new one finds the
	// release on disk and does it.
	e.opts.ipam = nil
	e.m = e.newManager(true)
	e.assertNoEndpoint(ep.GetAttachment(), ns)
	e.assertEmptyNode()
	if q := e.queuedReleases(); len(q) != 0 {
		t.Errorf("queued releases %v after IPAM answered", q)
	}
}

// A queued release IPAM does not answer ends the worker's pass, bounded by
// releaseTimeout: the others would each wait as long in turn. The next pass
// IPAM answers does them all.
func TestRetryReleasesStopsAtUnansweredRelease(t *testing.T) {
	calls := new(atomic.Int32)
	e := newTestManager(t, testOpts{ipam: func(f *fakeipam.IPAM) IPAM { return hungIPAM{f, calls} }})
	for _, id := range []string{"a", "b"} {
		e.create(id, "eth0", e.podNS("pod"+id))
		if _, err := e.m.DeleteEndpoint(t.Context(), attachment(id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	e.m.RetryReleases(t.Context())
	if n := calls.Load(); n != 1 {
		t.Errorf("ReleaseIP called %d times in a pass with IPAM hung; want once", n)
	}
	if q := e.queuedReleases(); len(q) != 2 {
		t.Errorf("queued releases %v, want both kept", q)
	}
	e.opts.ipam = nil
	e.m = e.newManager(true)
	e.assertEmptyNode()
}

// A crash between IPAM and the record leaves an allocation and maybe a
// veth with map entries but no record: the DEL still releases by handle
// and removes the veth and every entry pointing at it.
func TestDeleteWithoutRecord(t *testing.T) {
	e := newTestManager(t, testOpts{dualStack: true})
	att := attachment("a", "eth0")
	ns := e.podNS("podA")
	ep := e.create("a", "eth0", ns)
	if err := os.Remove(filepath.Join(e.stateDir, HostName(att)+".json")); err != nil {
		t.Fatal(err)
	}
	got, err := e.m.DeleteEndpoint(t.Context(), att)
	if err != nil || got != nil {
		t.Fatalf("DeleteEndpoint = %v, %v; want nil, nil", got, err)
	}
	e.assertNoEndpoint(att, ns)
	for _, p := range Addrs(ep) {
		if entry, err := e.bpf.Endpoint(p.Addr()); err == nil {
			t.Errorf("map entry of %s left pointing at the deleted veth: %+v", p.Addr(), entry)
		}
	}
	e.assertEmptyNode()
}

// An entry pointing at another veth is not the record-less endpoint's to
// remove.
func TestDeleteWithoutRecordKeepsOthersEntries(t *testing.T) {
	e := newTestManager(t, testOpts{})
	att := attachment("a", "eth0")
	e.create("a", "eth0", e.podNS("podA"))
	epB := e.create("b", "eth0", e.podNS("podB"))
	if err := os.Remove(filepath.Join(e.stateDir, HostName(att)+".json")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]bool{}
	for _, p := range Addrs(epB) {
		want[p.Addr()] = true
	}
	got := e.bpf.Endpoints()
	if len(got) != len(want) {
		t.Errorf("endpoint entries %v, want pod b's %v", got, want)
	}
	for ip, entry := range got {
		if !want[ip] || entry.Ifindex != e.hostIndex(epB.GetAttachment()) {
			t.Errorf("entry %s → %+v is not pod b's", ip, entry)
		}
	}
	if !strings.HasPrefix(e.records()[0], HostName(epB.GetAttachment())) {
		t.Errorf("records %v, want pod b's", e.records())
	}
}

// A release queued while IPAM was down must not take the addresses of the
// endpoint a later ADD of the same attachment made from the same, still
// unreleased, allocation.
func TestQueuedReleaseSparesRecreatedEndpoint(t *testing.T) {
	e := newTestManager(t, testOpts{})
	att := attachment("a", "eth0")
	ns := e.podNS("podA")
	e.create("a", "eth0", ns)
	e.ipam.FailNext("ReleaseIP", 1, errUnavailable)
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err != nil {
		t.Fatal(err)
	}
	if len(e.queuedReleases()) != 1 {
		t.Fatalf("queued releases %v, want one", e.queuedReleases())
	}
	// IPAM is back; the runtime ADDs the attachment again before the
	// release is retried, and IPAM answers with the allocation it holds.
	ep := e.create("a", "eth0", ns)
	e.m.RetryReleases(t.Context())
	allocs := e.ipam.Allocations()
	if len(allocs) != 1 || allocs[0].GetSequence() != e.loadRecord(att).IPAMSequence {
		t.Fatalf("allocations %v after the retry; the live endpoint %v lost its addresses", allocs, Addrs(ep))
	}
	if q := e.queuedReleases(); len(q) != 0 {
		t.Errorf("release of the live endpoint's allocation still queued: %v", q)
	}
}

// A DEL that cannot remove the veth fails and keeps the record and the
// allocation, so the runtime's retry finishes it.
func TestDeleteFailureKeepsStateForRetry(t *testing.T) {
	e := newTestManager(t, testOpts{})
	att := attachment("a", "eth0")
	ns := e.podNS("podA")
	e.create("a", "eth0", ns)
	e.nl.FailOn(nlfake.NodeNS, "LinkDel", 1, errInjected)
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err == nil {
		t.Fatal("DeleteEndpoint succeeded with LinkDel failing")
	}
	if len(e.records()) != 1 || len(e.ipam.Allocations()) != 1 || len(e.linkNames(nlfake.NodeNS)) != 1 {
		t.Fatalf("after a failed DEL: records %v, allocations %v, links %v; want all kept", e.records(), e.ipam.Allocations(), e.linkNames(nlfake.NodeNS))
	}
	e.assertWired(e.create("a", "eth0", ns)) // still whole: a retried ADD answers from it
	if _, err := e.m.DeleteEndpoint(t.Context(), att); err != nil {
		t.Fatal(err)
	}
	e.assertEmptyNode()
}

// Unreadable queued releases are dropped; files being written are left.
func TestRetryReleasesSkipsBadFiles(t *testing.T) {
	e := newTestManager(t, testOpts{})
	dir := filepath.Join(e.stateDir, "releases")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"lxc000000000bad.json": "{", "lxc000000000new.json.tmp": "{"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.m.RetryReleases(t.Context())
	if q := e.queuedReleases(); len(q) != 1 || q[0] != "lxc000000000new.json.tmp" {
		t.Errorf("release queue %v, want the file being written alone", q)
	}
	if n := e.ipam.Calls("ReleaseIP"); n != 0 {
		t.Errorf("ReleaseIP called %d times for unreadable releases", n)
	}
}

// A queued release IPAM refuses is logged; one it refuses as invalid is
// dropped (no retry can make it valid), any other stays queued.
func TestRetryReleaseRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantKept bool
	}{
		{"unavailable", errUnavailable, true},
		{"invalid", status.Error(codes.InvalidArgument, "no such handle"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			e := newTestManager(t, testOpts{logs: &logs})
			att := attachment("a", "eth0")
			if err := e.m.queueRelease(HostName(att), att, 7); err != nil {
				t.Fatal(err)
			}
			e.ipam.FailNext("ReleaseIP", 1, tc.err)
			e.m.RetryReleases(t.Context())
			if n := e.ipam.Calls("ReleaseIP"); n != 1 {
				t.Errorf("ReleaseIP called %d times, want 1", n)
			}
			if kept := len(e.queuedReleases()) == 1; kept != tc.wantKept {
				t.Errorf("release kept queued: %v, want %v (queue %v)", kept, tc.wantKept, e.queuedReleases())
			}
			if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, HostName(att)) {
				t.Errorf("no warning naming %s logged: %q", HostName(att), out)
			}
		})
	}
}
