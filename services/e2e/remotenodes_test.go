package e2e

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// TestRemoteNodeAPI gives a node a remote node by API beside the ones IPAM
// reports: it is listed with them, routed into the overlay, and removed
// again.
func TestRemoteNodeAPI(t *testing.T) {
	e := newEnvMode(t, 2, "tunnel")
	conn, err := grpc.NewClient("unix://"+e.cluster.Nodes[0].DatapathSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dp := datapathv1alpha1.NewDatapathServiceClient(conn)
	ctx := context.Background()

	ghost := &datapathv1alpha1.RemoteNode{Name: "ghost", NodeIps: []string{e.cluster.Outside.IP.String()}, PodCidrs: []string{"10.99.0.0/24"}}
	up, err := dp.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: ghost})
	if err != nil || up.GetNode().GetRevision() == "" {
		t.Fatalf("UpsertRemoteNode = %v, %v", up, err)
	}
	again, err := dp.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: ghost})
	if err != nil || again.GetNode().GetRevision() != up.GetNode().GetRevision() {
		t.Fatalf("repeated upsert = %v, %v; want the same revision", again, err)
	}
	_, err = dp.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-1"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("upserting the node itself = %v, want InvalidArgument", err)
	}
	_, err = dp.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: ghost, ExpectedRevision: "99"})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("upsert with a stale revision = %v, want Aborted", err)
	}

	e.eventually(func() error {
		list, err := dp.ListRemoteNodes(ctx, &datapathv1alpha1.ListRemoteNodesRequest{})
		if err != nil {
			return err
		}
		var names []string
		for _, n := range list.GetNodes() {
			names = append(names, n.GetName())
		}
		if strings.Join(names, ",") != "ghost,node-2" {
			return status.Errorf(codes.Unknown, "remote nodes %v, want ghost and node-2", names)
		}
		return nil
	})
	if out, _ := run(e.cluster.Nodes[0].Netns, "ip", "route", "show", "10.99.0.0/24"); !strings.Contains(out, "axon_vxlan") {
		t.Fatalf("route for the API's pod CIDR = %q, want it into the overlay", out)
	}
	if _, err := dp.DeleteRemoteNode(ctx, &datapathv1alpha1.DeleteRemoteNodeRequest{Name: "ghost"}); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(e.cluster.Nodes[0].Netns, "ip", "route", "show", "10.99.0.0/24"); out != "" {
		t.Fatalf("route left after DeleteRemoteNode: %q", out)
	}
}
