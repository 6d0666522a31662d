package allocator

import (
	"errors"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/pool"
)

func fuzzSeed(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzAllocateRequest checks the validation of AllocateIP requests from
// arbitrary wire bytes: never a panic, only ErrInvalid, and accepted
// requested IPs are canonical with at most one per family.
func FuzzAllocateRequest(f *testing.F) {
	fuzzSeed(f,
		&ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c", InterfaceName: "eth0"}, Node: "n", RequestedIps: []string{"10.0.0.1", "fd00::1"}},
		&ipamv1alpha1.AllocateIPRequest{Families: []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV6}, RequestedIps: []string{"::ffff:10.0.0.1"}},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &ipamv1alpha1.AllocateIPRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		got, err := parseRequested(req)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("validation error %v is not ErrInvalid", err)
			}
			return
		}
		for fam, addr := range got {
			if pool.FamilyOf(addr) != fam || addr.Zone() != "" || addr != addr.Unmap() {
				t.Fatalf("accepted %s as %v", addr, fam)
			}
		}
		_ = Handle{req.GetHandle().GetContainerId(), req.GetHandle().GetInterfaceName()}.validate()
	})
}

// FuzzNodeSpec checks node validation: never a panic, and what it accepts
// is canonical.
func FuzzNodeSpec(f *testing.F) {
	fuzzSeed(f,
		&ipamv1alpha1.Node{Name: "node-1.example", Addresses: []string{"192.168.0.1", "fd00::1"}, PodCidrs: []string{"10.244.1.0/24", "fd00:244::/64"}},
		&ipamv1alpha1.Node{Name: "x", PodCidrs: []string{"10.0.0.0/8", "10.1.0.0/16"}},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &ipamv1alpha1.Node{}
		if proto.Unmarshal(data, in) != nil {
			return
		}
		n, err := validateNode(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("validation error %v is not ErrInvalid", err)
			}
			return
		}
		for _, s := range n.GetPodCidrs() {
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Masked() != p || p.String() != s {
				t.Fatalf("accepted non-canonical pod CIDR %q", s)
			}
		}
		for _, s := range n.GetAddresses() {
			if a, err := netip.ParseAddr(s); err != nil || a.String() != s {
				t.Fatalf("accepted non-canonical address %q", s)
			}
		}
	})
}
