package server

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// Bounds of the lists and of the strings without a shared limit in the
// endpoint and remote-node requests, as datapath.proto documents them. The
// service RPCs are bounded by package lb.
const (
	// maxPodUID: a Kubernetes UID is a 36-character UUID.
	maxPodUID = 128
	// maxRequestedPools and maxRequestedIPs: one pool or address per
	// family, with room for fall-through pools.
	maxRequestedPools = 8
	maxRequestedIPs   = 2
	// maxExpectedAddresses bounds CheckEndpointRequest.expected_addresses.
	maxExpectedAddresses = 16
	// maxValidAttachments bounds GarbageCollectEndpointsRequest's list.
	maxValidAttachments = 16384
	// maxNodeIPs bounds a remote node's node and health addresses,
	// maxRemotePodCIDRs its pod CIDRs (IPAM blocks).
	maxNodeIPs        = 16
	maxRemotePodCIDRs = 4096
	// maxRevision bounds an expected_revision.
	maxRevision = 64
)

// checkLimits checks the strings, lists and maps of an endpoint or
// remote-node request against their documented limits before anything is
// done with them; a violation is InvalidArgument with a bounded message.
func checkLimits(req proto.Message) error {
	var err error
	switch r := req.(type) {
	case *datapathv1alpha1.CreateEndpointRequest:
		err = bounded.First(
			attachmentLimits("attachment", r.GetAttachment()),
			bounded.String("netns_path", r.GetNetnsPath(), bounded.Path),
			bounded.String("pod_namespace", r.GetPodNamespace(), bounded.DNSLabel),
			bounded.String("pod_name", r.GetPodName(), bounded.DNSSubdomain),
			bounded.String("pod_uid", r.GetPodUid(), maxPodUID),
			bounded.Labels("labels", r.GetLabels()),
			bounded.Annotations("annotations", r.GetAnnotations()),
			bounded.Labels("namespace_labels", r.GetNamespaceLabels()),
			bounded.Annotations("namespace_annotations", r.GetNamespaceAnnotations()),
			bounded.Strings("requested_pools", r.GetRequestedPools(), maxRequestedPools, bounded.DNSLabel),
			bounded.Strings("requested_ips", r.GetRequestedIps(), maxRequestedIPs, bounded.Address),
			bounded.String("sticky_key", r.GetStickyKey(), bounded.Key),
			bounded.Map("cni_args", r.GetCniArgs(), bounded.MapBytes),
			bounded.String("network", r.GetNetwork(), bounded.DNSSubdomain),
		)
	case *datapathv1alpha1.DeleteEndpointRequest:
		err = bounded.First(
			attachmentLimits("attachment", r.GetAttachment()),
			bounded.String("netns_path", r.GetNetnsPath(), bounded.Path))
	case *datapathv1alpha1.GetEndpointRequest:
		err = attachmentLimits("attachment", r.GetAttachment())
	case *datapathv1alpha1.CheckEndpointRequest:
		err = bounded.First(
			attachmentLimits("attachment", r.GetAttachment()),
			bounded.String("netns_path", r.GetNetnsPath(), bounded.Path),
			bounded.Strings("expected_addresses", r.GetExpectedAddresses(), maxExpectedAddresses, bounded.Address))
	case *datapathv1alpha1.ListEndpointsRequest:
		err = bounded.First(
			bounded.String("pod_namespace", r.GetPodNamespace(), bounded.DNSLabel),
			bounded.String("pod_name", r.GetPodName(), bounded.DNSSubdomain))
	case *datapathv1alpha1.GarbageCollectEndpointsRequest:
		err = bounded.First(
			bounded.Count("valid_attachments", len(r.GetValidAttachments()), maxValidAttachments),
			bounded.String("network", r.GetNetwork(), bounded.DNSSubdomain))
		for i, att := range r.GetValidAttachments() {
			if err != nil {
				break
			}
			err = attachmentLimits(fmt.Sprintf("valid_attachments[%d]", i), att)
		}
	case *datapathv1alpha1.UpsertRemoteNodeRequest:
		n := r.GetNode()
		err = bounded.First(
			bounded.String("node.name", n.GetName(), bounded.DNSSubdomain),
			bounded.Strings("node.node_ips", n.GetNodeIps(), maxNodeIPs, bounded.Address),
			bounded.Strings("node.pod_cidrs", n.GetPodCidrs(), maxRemotePodCIDRs, bounded.Address),
			bounded.Strings("node.health_ips", n.GetHealthIps(), maxNodeIPs, bounded.Address),
			bounded.String("expected_revision", r.GetExpectedRevision(), maxRevision))
	case *datapathv1alpha1.DeleteRemoteNodeRequest:
		err = bounded.First(
			bounded.String("name", r.GetName(), bounded.DNSSubdomain),
			bounded.String("expected_revision", r.GetExpectedRevision(), maxRevision))
	}
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// attachmentLimits checks an attachment's lengths; emptiness and the form
// of the interface name are the endpoint manager's to report.
func attachmentLimits(field string, att *datapathv1alpha1.Attachment) error {
	return bounded.First(
		bounded.String(field+".container_id", att.GetContainerId(), bounded.ContainerID),
		bounded.String(field+".interface_name", att.GetInterfaceName(), bounded.InterfaceName))
}
