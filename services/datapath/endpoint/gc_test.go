package endpoint

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// rewriteEndpoint changes att's recorded endpoint, as an older agent or
// the passing of time would have left it.
func (e *testEnv) rewriteEndpoint(att *datapathv1alpha1.Attachment, change func(*datapathv1alpha1.Endpoint)) {
	e.t.Helper()
	rec, ep, err := e.m.store.load(HostName(att))
	if err != nil {
		e.t.Fatal(err)
	}
	change(ep)
	if rec.Endpoint, err = protojson.Marshal(ep); err != nil {
		e.t.Fatal(err)
	}
	if err := e.m.store.save(HostName(att), rec); err != nil {
		e.t.Fatal(err)
	}
}

func aged(ep *datapathv1alpha1.Endpoint) { ep.CreateTime = timestamppb.New(time.Now().Add(-time.Hour)) }

func containers(eps []*datapathv1alpha1.Endpoint) []string {
	var out []string
	for _, ep := range eps {
		out = append(out, ep.GetAttachment().GetContainerId())
	}
	slices.Sort(out)
	return out
}

// GC removes the network's endpoints the runtime no longer knows and that
// are old enough, keeps the rest, and has IPAM release the allocations no
// kept endpoint owns.
func TestGarbageCollect(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		name := "Real"
		if dryRun {
			name = "DryRun"
		}
		t.Run(name, func(t *testing.T) {
			e := newTestManager(t, testOpts{reserved: func(a *datapathv1alpha1.Attachment) bool { return a.GetContainerId() == "health" }})
			for _, id := range []string{"valid", "stale", "young", "other-net", "no-net", "health"} {
				e.create(id, "eth0", e.podNS(id))
			}
			for _, id := range []string{"valid", "stale", "other-net", "no-net", "health"} {
				e.rewriteEndpoint(attachment(id, "eth0"), aged)
			}
			e.rewriteEndpoint(attachment("other-net", "eth0"), func(ep *datapathv1alpha1.Endpoint) { ep.Network = "macvlan" })
			e.rewriteEndpoint(attachment("no-net", "eth0"), func(ep *datapathv1alpha1.Endpoint) { ep.Network = "" })
			e.rewriteEndpoint(attachment("health", "eth0"), func(ep *datapathv1alpha1.Endpoint) { ep.Network = "axon-health" })
			// An allocation no endpoint owns (an ADD that crashed before
			// its record): IPAM releases it.
			if _, err := e.ipam.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{
				Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "leaked", InterfaceName: "eth0"}, Node: testNode,
			}); err != nil {
				t.Fatal(err)
			}
			staleIdx := e.hostIndex(attachment("stale", "eth0"))

			removed, released, err := e.m.GarbageCollect(t.Context(), "axon", []*datapathv1alpha1.Attachment{attachment("valid", "eth0")}, 30*time.Minute, dryRun)
			if err != nil {
				t.Fatalf("GarbageCollect: %v", err)
			}
			if got := containers(removed); !slices.Equal(got, []string{"stale"}) {
				t.Errorf("removed %v, want [stale]", got)
			}
			// The leaked allocation, and stale's: its DEL left the release to
			// the release worker (or, in a dry run, kept it), and nothing
			// names it live.
			if released != 2 {
				t.Errorf("IPAM released %d allocations, want 2", released)
			}
			holders := map[string]bool{}
			for _, a := range e.ipam.Allocations() {
				holders[a.GetHandle().GetContainerId()] = true
			}
			for _, id := range []string{"valid", "young", "other-net", "no-net", "health"} {
				if !holders[id] {
					t.Errorf("%s lost its allocation", id)
				}
				if _, err := os.Stat(filepath.Join(e.stateDir, HostName(attachment(id, "eth0"))+".json")); err != nil {
					t.Errorf("%s lost its record: %v", id, err)
				}
			}
			if dryRun {
				if !holders["stale"] || !holders["leaked"] {
					t.Errorf("dry run released allocations: holders %v", holders)
				}
				if _, ok := e.bpf.Devices()[staleIdx]; !ok || len(e.records()) != 6 {
					t.Errorf("dry run removed an endpoint: records %v", e.records())
				}
				return
			}
			if holders["stale"] || holders["leaked"] {
				t.Errorf("allocations of stale or leaked kept: holders %v", holders)
			}
			e.assertNoEndpoint(attachment("stale", "eth0"), filepath.Join(e.nsDir, "stale"))
			if _, ok := e.bpf.Devices()[staleIdx]; ok {
				t.Errorf("stale's device entry kept")
			}
			if n := len(e.records()); n != 5 {
				t.Errorf("%d records, want 5: %v", n, e.records())
			}
		})
	}
}

// A GC for every network (no network given) removes any endpoint the
// runtime does not list, those recorded without a network too.
func TestGarbageCollectAllNetworks(t *testing.T) {
	e := newTestManager(t, testOpts{})
	for _, id := range []string{"a", "b"} {
		e.create(id, "eth0", e.podNS(id))
		e.rewriteEndpoint(attachment(id, "eth0"), aged)
	}
	e.rewriteEndpoint(attachment("b", "eth0"), func(ep *datapathv1alpha1.Endpoint) { ep.Network = "" })
	removed, _, err := e.m.GarbageCollect(t.Context(), "", nil, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := containers(removed); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("removed %v, want [a b]", got)
	}
	e.assertEmptyNode()
}
