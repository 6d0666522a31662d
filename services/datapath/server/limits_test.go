package server_test

import (
	"maps"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// TestEndpointRequestLimits holds the endpoint and remote-node RPCs to the
// limits datapath.proto documents: a CreateEndpoint with every bounded field
// at its limit is served (and records only Axon's annotations), one byte or
// entry over any limit is INVALID_ARGUMENT with a short message, and
// nothing is allocated for it.
func TestEndpointRequestLimits(t *testing.T) {
	n := newNode(t, "10.0.1.0/29")
	if err := n.agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := n.client
	long := func(n int) string { return strings.Repeat("x", n) }
	label := strings.Repeat("p", 253) + "/" + strings.Repeat("k", 63)
	// Annotations of exactly 256 KiB, one of them Axon's.
	annotations := map[string]string{"ipam.axon.io/pool": "blue", "sub.axon.io/x": "1", "notaxon.io/y": "2"}
	used := 0
	for k, v := range annotations {
		used += len(k) + len(v)
	}
	annotations["example.com/big"] = long(bounded.MapBytes - used - len("example.com/big"))
	full := func(id string) *datapathv1alpha1.CreateEndpointRequest {
		return &datapathv1alpha1.CreateEndpointRequest{
			Attachment:           &datapathv1alpha1.Attachment{ContainerId: id + long(bounded.ContainerID-len(id)), InterfaceName: "eth0123456789ab"},
			NetnsPath:            n.pod(t, id),
			PodNamespace:         long(bounded.DNSLabel),
			PodName:              long(bounded.DNSSubdomain),
			PodUid:               long(128),
			Labels:               map[string]string{label: long(bounded.LabelValue)},
			Annotations:          maps.Clone(annotations),
			NamespaceLabels:      map[string]string{label: long(bounded.LabelValue)},
			NamespaceAnnotations: maps.Clone(annotations),
			StickyKey:            long(bounded.Key),
			CniArgs:              map[string]string{"IgnoreUnknown": "1"},
			Network:              long(bounded.DNSSubdomain),
		}
	}
	resp, err := c.CreateEndpoint(t.Context(), full("a"))
	if err != nil {
		t.Fatalf("CreateEndpoint with every field at its limit: %v", err)
	}
	want := map[string]string{"ipam.axon.io/pool": "blue", "sub.axon.io/x": "1"}
	if got := resp.GetEndpoint().GetAnnotations(); !maps.Equal(got, want) {
		t.Errorf("recorded annotations %v, want only Axon's %v", got, want)
	}

	for _, tc := range []struct {
		name string
		over func(r *datapathv1alpha1.CreateEndpointRequest)
	}{
		{"container_id", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Attachment.ContainerId += "x" }},
		{"container_id of 1.4 MB", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Attachment.ContainerId = long(1_400_000) }},
		{"interface_name of 1.4 MB", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Attachment.InterfaceName = long(1_400_000) }},
		{"netns_path", func(r *datapathv1alpha1.CreateEndpointRequest) { r.NetnsPath = long(bounded.Path + 1) }},
		{"pod_namespace", func(r *datapathv1alpha1.CreateEndpointRequest) { r.PodNamespace += "x" }},
		{"pod_name", func(r *datapathv1alpha1.CreateEndpointRequest) { r.PodName += "x" }},
		{"pod_uid", func(r *datapathv1alpha1.CreateEndpointRequest) { r.PodUid += "x" }},
		{"label value", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Labels[label] += "x" }},
		{"annotations", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Annotations["example.com/big"] += "x" }},
		{"annotations of 3 MB", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Annotations["example.com/big"] = long(3 << 20) }},
		{"namespace label key", func(r *datapathv1alpha1.CreateEndpointRequest) { r.NamespaceLabels["x"+label] = "" }},
		{"namespace annotations", func(r *datapathv1alpha1.CreateEndpointRequest) { r.NamespaceAnnotations["example.com/big"] += "x" }},
		{"requested_pools count", func(r *datapathv1alpha1.CreateEndpointRequest) { r.RequestedPools = make([]string, 9) }},
		{"requested_pools entry", func(r *datapathv1alpha1.CreateEndpointRequest) { r.RequestedPools = []string{long(64)} }},
		{"requested_ips count", func(r *datapathv1alpha1.CreateEndpointRequest) {
			r.RequestedIps = []string{"10.0.1.3", "10.0.1.4", "10.0.1.5"}
		}},
		{"requested_ips entry", func(r *datapathv1alpha1.CreateEndpointRequest) { r.RequestedIps = []string{long(65)} }},
		{"sticky_key", func(r *datapathv1alpha1.CreateEndpointRequest) { r.StickyKey += "x" }},
		{"cni_args", func(r *datapathv1alpha1.CreateEndpointRequest) { r.CniArgs[long(bounded.QualifiedName+1)] = "" }},
		{"network", func(r *datapathv1alpha1.CreateEndpointRequest) { r.Network += "x" }},
	} {
		t.Run("CreateEndpoint/"+tc.name, func(t *testing.T) {
			req := full("b")
			tc.over(req)
			_, err := c.CreateEndpoint(t.Context(), req)
			wantShortInvalid(t, err)
			if allocs := n.ipam.Allocations(); len(allocs) != 1 {
				t.Errorf("%d IPAM allocations after a refused create, want pod a's only", len(allocs))
			}
		})
	}

	attOver := &datapathv1alpha1.Attachment{ContainerId: long(bounded.ContainerID + 1), InterfaceName: "eth0"}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"DeleteEndpoint container_id", func() error {
			_, err := c.DeleteEndpoint(t.Context(), &datapathv1alpha1.DeleteEndpointRequest{Attachment: attOver})
			return err
		}},
		{"DeleteEndpoint netns_path", func() error {
			_, err := c.DeleteEndpoint(t.Context(), &datapathv1alpha1.DeleteEndpointRequest{Attachment: att("a"), NetnsPath: long(bounded.Path + 1)})
			return err
		}},
		{"GetEndpoint container_id", func() error {
			_, err := c.GetEndpoint(t.Context(), &datapathv1alpha1.GetEndpointRequest{Attachment: attOver})
			return err
		}},
		{"CheckEndpoint expected_addresses", func() error {
			_, err := c.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: att("a"), ExpectedAddresses: make([]string, 17)})
			return err
		}},
		{"ListEndpoints pod_name", func() error {
			_, err := c.ListEndpoints(t.Context(), &datapathv1alpha1.ListEndpointsRequest{PodNamespace: "default", PodName: long(bounded.DNSSubdomain + 1)})
			return err
		}},
		{"GarbageCollectEndpoints attachment", func() error {
			_, err := c.GarbageCollectEndpoints(t.Context(), &datapathv1alpha1.GarbageCollectEndpointsRequest{ValidAttachments: []*datapathv1alpha1.Attachment{attOver}})
			return err
		}},
		{"UpsertRemoteNode name", func() error {
			_, err := c.UpsertRemoteNode(t.Context(), &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: long(1_400_000)}})
			return err
		}},
		{"DeleteRemoteNode name", func() error {
			_, err := c.DeleteRemoteNode(t.Context(), &datapathv1alpha1.DeleteRemoteNodeRequest{Name: long(bounded.DNSSubdomain + 1)})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantShortInvalid(t, tc.call()) })
	}
	if _, err := c.GetEndpoint(t.Context(), &datapathv1alpha1.GetEndpointRequest{Attachment: resp.GetEndpoint().GetAttachment()}); err != nil {
		t.Errorf("pod a's endpoint after the refused calls: %v", err)
	}
}

// wantShortInvalid fails unless err is InvalidArgument with a message that
// cannot have echoed a long input.
func wantShortInvalid(t *testing.T, err error) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("code %v (%.300v), want InvalidArgument", status.Code(err), err)
	}
	if msg := status.Convert(err).Message(); len(msg) > 200 {
		t.Errorf("message is %d bytes long: %.300s", len(msg), msg)
	}
}
