package health_test

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/veth"
)

const node = "node-a"

// keeper is a health endpoint keeper on the real endpoint lifecycle over
// fakes.
type keeper struct {
	nl       *nlfake.Fake
	bpf      *bpffake.Fake
	ipam     *fakeipam.IPAM
	eps      *endpoint.Manager
	keep     *health.Endpoint
	stateDir string
}

func newKeeper(t *testing.T) *keeper {
	t.Helper()
	k := &keeper{nl: nlfake.New(), bpf: bpffake.New(), stateDir: t.TempDir(),
		ipam: fakeipam.New(fakeipam.Config{Node: node, Blocks: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}})}
	k.bpf.SetInterfaces(func() map[string]int { return k.nl.Indexes(nlfake.NodeNS) })
	if _, err := k.ipam.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: node}, AllowMissing: true}); err != nil {
		t.Fatal(err)
	}
	h, err := k.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	k.eps = endpoint.New(endpoint.Config{NodeName: node, StateDir: k.stateDir, MTU: 1450}, k.ipam, &veth.Plumber{Namespaces: k.nl}, h, k.bpf, nil, slog.New(slog.DiscardHandler))
	k.keep = health.NewEndpoint(node, k.stateDir, k.nl, h, k.eps)
	return k
}

// inPlace checks the health endpoint's record, host veth, IPAM allocation
// and map entry, and returns its address.
func (k *keeper) inPlace(t *testing.T) netip.Addr {
	t.Helper()
	att := health.Attachment(node)
	ep, err := k.eps.GetEndpoint(att)
	if err != nil {
		t.Fatalf("health endpoint record: %v", err)
	}
	if _, ok := k.nl.Link(nlfake.NodeNS, veth.HostName(att.GetContainerId(), att.GetInterfaceName())); !ok {
		t.Fatal("health endpoint veth missing")
	}
	if _, ok := k.nl.Link(health.NetnsPath(k.stateDir), "eth0"); !ok {
		t.Fatal("eth0 missing in the health namespace")
	}
	addrs := endpoint.Addrs(ep)
	if len(addrs) != 1 {
		t.Fatalf("health endpoint addresses %v, want one", addrs)
	}
	ip := addrs[0].Addr()
	if holder := k.ipam.Holders()[ip]; holder != health.ContainerID(node)+"/eth0" {
		t.Errorf("IPAM holder of %s = %q, want the health endpoint", ip, holder)
	}
	if _, err := k.bpf.Endpoint(ip); err != nil {
		t.Errorf("map entry of %s: %v", ip, err)
	}
	if ep.GetNetwork() != health.Network {
		t.Errorf("network %q, want %q", ep.GetNetwork(), health.Network)
	}
	return ip
}

func TestKeepCreatesTheHealthEndpoint(t *testing.T) {
	k := newKeeper(t)
	if err := k.keep.Keep(t.Context()); err != nil {
		t.Fatal(err)
	}
	ip := k.inPlace(t)
	allocs := k.ipam.Calls("AllocateIP")
	// In place: Keep changes nothing.
	if err := k.keep.Keep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if k.inPlace(t) != ip || k.ipam.Calls("AllocateIP") != allocs {
		t.Error("a second Keep re-created the endpoint")
	}
	if n := len(k.ipam.Allocations()); n != 1 {
		t.Errorf("IPAM allocations %d, want 1", n)
	}
}

func TestKeepRecreatesTheHealthEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(k *keeper) error
	}{
		{"veth deleted", func(k *keeper) error {
			att := health.Attachment(node)
			return k.nl.DeleteLink(nlfake.NodeNS, veth.HostName(att.GetContainerId(), att.GetInterfaceName()))
		}},
		{"namespace deleted", func(k *keeper) error {
			k.nl.DeleteNamespace(health.NetnsPath(k.stateDir))
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeeper(t)
			if err := k.keep.Keep(t.Context()); err != nil {
				t.Fatal(err)
			}
			k.inPlace(t)
			if err := tc.damage(k); err != nil {
				t.Fatal(err)
			}
			if err := k.keep.Keep(t.Context()); err != nil {
				t.Fatalf("Keep after the damage: %v", err)
			}
			ip := k.inPlace(t)
			if n := len(k.ipam.Allocations()); n != 1 {
				t.Errorf("IPAM allocations %d, want 1 (the old one released)", n)
			}
			if eps := k.bpf.Endpoints(); len(eps) != 1 {
				t.Errorf("map entries %v, want only %s", eps, ip)
			}
		})
	}
}

func TestKeepRetriesAfterFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(k *keeper)
	}{
		{"namespace", func(k *keeper) { k.nl.FailOn(health.NetnsPath(k.stateDir), "Ensure", 1, unix.EPERM) }},
		{"veth", func(k *keeper) { k.nl.FailOn(nlfake.NodeNS, "LinkAdd", 1, unix.ENOMEM) }},
		{"IPAM", func(k *keeper) { k.ipam.FailNext("AllocateIP", 1, unix.EAGAIN) }},
		{"map", func(k *keeper) { k.bpf.FailOn(bpffake.OpPutEndpoint, 1, unix.E2BIG) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeeper(t)
			tc.inject(k)
			if err := k.keep.Keep(t.Context()); err == nil {
				t.Fatal("Keep succeeded, want the injected failure")
			}
			if _, err := k.eps.GetEndpoint(health.Attachment(node)); err == nil {
				t.Error("a failed Keep left a record")
			}
			if err := k.keep.Keep(t.Context()); err != nil {
				t.Fatalf("Keep after the failure: %v", err)
			}
			k.inPlace(t)
			if n := len(k.ipam.Allocations()); n != 1 {
				t.Errorf("IPAM allocations %d, want 1", n)
			}
		})
	}
}

// A lookup of the veth that fails for another reason than "not found" says
// nothing about the endpoint: Keep reports it and leaves the endpoint (and
// its address) alone.
func TestKeepLeavesTheEndpointOnLookupError(t *testing.T) {
	k := newKeeper(t)
	if err := k.keep.Keep(t.Context()); err != nil {
		t.Fatal(err)
	}
	ip := k.inPlace(t)
	allocs := k.ipam.Calls("AllocateIP")
	k.nl.FailOn(nlfake.NodeNS, "LinkByName", 1, unix.ENOBUFS)
	if err := k.keep.Keep(t.Context()); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Keep = %v, want the lookup's ENOBUFS", err)
	}
	if k.inPlace(t) != ip || k.ipam.Calls("AllocateIP") != allocs || k.ipam.Calls("ReleaseIP") != 0 {
		t.Error("a failed lookup re-created the health endpoint")
	}
}
