package server

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// Bounds of the lists in IPAM requests, as ipam.proto and resources.proto
// document them. Strings and maps use the shared limits of package bounded;
// AllocateIPRequest is checked by the allocator (AllocateIPs reports each
// request's error in its own result).
const (
	// maxRevision: a revision is a decimal int64.
	maxRevision = 20
	// maxPoolCIDRs and maxReservedRanges bound one family of a pool.
	maxPoolCIDRs      = 64
	maxReservedRanges = 256
	// maxSelectorExpressions and maxSelectorValues bound a label selector.
	maxSelectorExpressions = 64
	maxSelectorValues      = 256
	// maxNodeAddresses and maxNodePodCIDRs bound a node.
	maxNodeAddresses = 16
	maxNodePodCIDRs  = 2
	// maxLiveHandles bounds GarbageCollectRequest.live_handles.
	maxLiveHandles = 16384
)

// checkLimits checks the strings, lists and maps of an IPAM request against
// their documented limits, before anything reaches the store or a message;
// a violation is InvalidArgument with a bounded message.
func checkLimits(req proto.Message) error {
	var errs []error
	str := func(field, s string, limit int) { errs = append(errs, bounded.String(field, s, limit)) }
	switch r := req.(type) {
	case *ipamv1alpha1.CreatePoolRequest:
		errs = append(errs, poolLimits(r.GetPool()))
	case *ipamv1alpha1.UpdatePoolRequest:
		errs = append(errs, poolLimits(r.GetPool()))
		str("expected_revision", r.GetExpectedRevision(), maxRevision)
	case *ipamv1alpha1.GetPoolRequest:
		str("name", r.GetName(), bounded.DNSLabel)
	case *ipamv1alpha1.DeletePoolRequest:
		str("name", r.GetName(), bounded.DNSLabel)
		str("expected_revision", r.GetExpectedRevision(), maxRevision)
	case *ipamv1alpha1.CreateNodeRequest:
		errs = append(errs, nodeLimits(r.GetNode()))
	case *ipamv1alpha1.UpdateNodeRequest:
		errs = append(errs, nodeLimits(r.GetNode()))
		str("expected_revision", r.GetExpectedRevision(), maxRevision)
	case *ipamv1alpha1.GetNodeRequest:
		str("name", r.GetName(), bounded.DNSSubdomain)
	case *ipamv1alpha1.DeleteNodeRequest:
		str("name", r.GetName(), bounded.DNSSubdomain)
		str("expected_revision", r.GetExpectedRevision(), maxRevision)
	case *ipamv1alpha1.ClaimBlockRequest:
		str("node", r.GetNode(), bounded.DNSSubdomain)
		str("pool", r.GetPool(), bounded.DNSLabel)
		str("claim_id", r.GetClaimId(), bounded.Key)
	case *ipamv1alpha1.ReleaseBlockRequest:
		str("cidr", r.GetCidr(), bounded.Address)
		str("node", r.GetNode(), bounded.DNSSubdomain)
		str("expected_revision", r.GetExpectedRevision(), maxRevision)
	case *ipamv1alpha1.ListBlocksRequest:
		str("node", r.GetNode(), bounded.DNSSubdomain)
		str("pool", r.GetPool(), bounded.DNSLabel)
	case *ipamv1alpha1.WatchBlocksRequest:
		str("node", r.GetNode(), bounded.DNSSubdomain)
		str("pool", r.GetPool(), bounded.DNSLabel)
	case *ipamv1alpha1.ReleaseIPRequest:
		errs = append(errs, handleLimits("handle", r.GetHandle()))
	case *ipamv1alpha1.GetAllocationRequest:
		errs = append(errs, handleLimits("handle", r.GetHandle()))
		str("ip", r.GetIp(), bounded.Address)
	case *ipamv1alpha1.ListAllocationsRequest:
		str("node", r.GetNode(), bounded.DNSSubdomain)
		str("pool", r.GetPool(), bounded.DNSLabel)
		str("pod_namespace", r.GetPodNamespace(), bounded.DNSLabel)
	case *ipamv1alpha1.GarbageCollectRequest:
		str("node", r.GetNode(), bounded.DNSSubdomain)
		errs = append(errs, bounded.Count("live_handles", len(r.GetLiveHandles()), maxLiveHandles))
		for i, h := range r.GetLiveHandles() {
			if err := handleLimits(fmt.Sprintf("live_handles[%d]", i), h); err != nil {
				errs = append(errs, err)
				break // one is enough to refuse the call
			}
		}
	case *ipamv1alpha1.ReserveIPRequest:
		str("ip", r.GetIp(), bounded.Address)
		str("key", r.GetKey(), bounded.Key)
	case *ipamv1alpha1.UnreserveIPRequest:
		str("ip", r.GetIp(), bounded.Address)
		str("key", r.GetKey(), bounded.Key)
	case *ipamv1alpha1.ListReservationsRequest:
		str("pool", r.GetPool(), bounded.DNSLabel)
		str("key", r.GetKey(), bounded.Key)
	}
	if err := bounded.First(errs...); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// handleLimits checks an owner handle's lengths (emptiness is the
// allocator's to report).
func handleLimits(field string, h *ipamv1alpha1.OwnerHandle) error {
	return bounded.First(
		bounded.String(field+".container_id", h.GetContainerId(), bounded.ContainerID),
		bounded.String(field+".interface_name", h.GetInterfaceName(), bounded.InterfaceName),
	)
}

func poolLimits(p *ipamv1alpha1.Pool) error {
	errs := []error{
		bounded.String("pool.name", p.GetName(), bounded.DNSLabel),
		selectorLimits("pool.namespace_selector", p.GetNamespaceSelector()),
		selectorLimits("pool.pod_selector", p.GetPodSelector()),
	}
	for _, f := range []struct {
		name string
		spec *ipamv1alpha1.PoolFamily
	}{{"pool.ipv4", p.GetIpv4()}, {"pool.ipv6", p.GetIpv6()}} {
		errs = append(errs,
			bounded.Strings(f.name+".cidrs", f.spec.GetCidrs(), maxPoolCIDRs, bounded.Address),
			bounded.Count(f.name+".reserved_ranges", len(f.spec.GetReservedRanges()), maxReservedRanges))
		for i, r := range f.spec.GetReservedRanges() {
			field := fmt.Sprintf("%s.reserved_ranges[%d]", f.name, i)
			errs = append(errs,
				bounded.String(field+".cidr", r.GetCidr(), bounded.Address),
				bounded.String(field+".start", r.GetStart(), bounded.Address),
				bounded.String(field+".end", r.GetEnd(), bounded.Address))
		}
	}
	return bounded.First(errs...)
}

func selectorLimits(field string, s *commonv1alpha1.LabelSelector) error {
	errs := []error{
		bounded.Labels(field+".match_labels", s.GetMatchLabels()),
		bounded.Count(field+".match_expressions", len(s.GetMatchExpressions()), maxSelectorExpressions),
	}
	for i, e := range s.GetMatchExpressions() {
		f := fmt.Sprintf("%s.match_expressions[%d]", field, i)
		errs = append(errs,
			bounded.String(f+".key", e.GetKey(), bounded.QualifiedName),
			bounded.Strings(f+".values", e.GetValues(), maxSelectorValues, bounded.LabelValue))
	}
	return bounded.First(errs...)
}

func nodeLimits(n *ipamv1alpha1.Node) error {
	return bounded.First(
		bounded.String("node.name", n.GetName(), bounded.DNSSubdomain),
		bounded.Strings("node.addresses", n.GetAddresses(), maxNodeAddresses, bounded.Address),
		bounded.Strings("node.pod_cidrs", n.GetPodCidrs(), maxNodePodCIDRs, bounded.Address),
	)
}
