package nodes

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"github.com/axon-cni/axon/bpf/testpoll"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/operator/internal/apiservertest"
	"github.com/axon-cni/axon/services/operator/internal/ipamtest"
)

// waitTimeout bounds every wait for the controller to act; generous, as
// the machine may be loaded.
const waitTimeout = 30 * time.Second

// TestAgainstAPIServer runs the controller against a real kube-apiserver
// (one for every subtest; each subtest has its own IPAM and node names)
// and the real IPAM service.
func TestAgainstAPIServer(t *testing.T) {
	api := apiservertest.Start(t)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, api *apiservertest.Server)
	}{
		{"RegisterUpdateDelete", testRegisterUpdateDelete},
		{"DeletesOrphansAtStart", testDeletesOrphansAtStart},
		{"KeepsDatapathAddresses", testKeepsDatapathAddresses},
		{"RetriesFailures", testRetriesFailures},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, api) })
	}
}

// testRegisterUpdateDelete: a new Node is registered with its InternalIPs
// and pod CIDRs, which a host-scope pool makes its blocks; an address
// change reaches IPAM; deleting the Node releases its blocks and its pods'
// addresses.
func testRegisterUpdateDelete(t *testing.T, api *apiservertest.Server) {
	ipam := ipamtest.Start(t)
	createHostScopePool(t, ipam)
	ctrl, _ := startController(t, api, ipam.Client)
	const name = "rud-node"
	node := createNode(t, api, name, []string{"192.0.2.10", "2001:db8::10"}, []string{"10.1.1.0/24", "fd00:1:1::/64"})

	waitNode(t, ipam, name, []string{"192.0.2.10", "2001:db8::10"}, []string{"10.1.1.0/24", "fd00:1:1::/64"})
	if err := ctrl.Ready(); err != nil {
		t.Errorf("Ready() = %v after the first sync", err)
	}
	// A pod on the node gets its address from the node's pod CIDR.
	alloc, err := ipam.Client.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{
		Node: name, Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c1", InterfaceName: "eth0"},
		Families: []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV4, commonv1alpha1.IPFamily_IP_FAMILY_IPV6},
	})
	if err != nil {
		t.Fatalf("allocate a pod address on the node: %v", err)
	}
	for _, a := range alloc.GetAllocation().GetAddresses() {
		if a.GetBlock() != "10.1.1.0/24" && a.GetBlock() != "fd00:1:1::/64" {
			t.Errorf("pod address %s from block %s, want one of the node's pod CIDRs", a.GetIp(), a.GetBlock())
		}
	}

	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.0.2.11"},
		{Type: corev1.NodeHostName, Address: name},
		{Type: corev1.NodeInternalIP, Address: "2001:db8::10"},
	}
	if _, err := api.Client.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update node status: %v", err)
	}
	waitNode(t, ipam, name, []string{"192.0.2.11", "2001:db8::10"}, []string{"10.1.1.0/24", "fd00:1:1::/64"})

	if err := api.Client.CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete node: %v", err)
	}
	waitGone(t, ipam, name)
	for _, a := range alloc.GetAllocation().GetAddresses() {
		_, err := ipam.Client.GetAllocation(t.Context(), &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Ip{Ip: a.GetIp()}})
		if status.Code(err) != codes.NotFound {
			t.Errorf("allocation of %s after delete: %v, want NotFound", a.GetIp(), err)
		}
	}
}

// testDeletesOrphansAtStart: a node IPAM has and Kubernetes does not (it
// was deleted while no operator ran) is deleted from IPAM at start; one
// both have stays.
func testDeletesOrphansAtStart(t *testing.T, api *apiservertest.Server) {
	ipam := ipamtest.Start(t)
	createHostScopePool(t, ipam)
	const kept, orphan = "orph-kept", "orph-gone"
	for _, n := range []*ipamv1alpha1.Node{
		{Name: kept, Addresses: []string{"192.0.2.20"}, PodCidrs: []string{"10.1.2.0/24"}},
		{Name: orphan, Addresses: []string{"192.0.2.21"}, PodCidrs: []string{"10.1.3.0/24"}},
	} {
		if _, err := ipam.Alloc.CreateNode(t.Context(), n); err != nil {
			t.Fatalf("register %s in IPAM: %v", n.GetName(), err)
		}
	}
	createNode(t, api, kept, []string{"192.0.2.20"}, []string{"10.1.2.0/24"})

	ctrl, _ := startController(t, api, ipam.Client)
	waitGone(t, ipam, orphan)
	testpoll.Until(t, waitTimeout, ctrl.Ready)
	waitNode(t, ipam, kept, []string{"192.0.2.20"}, []string{"10.1.2.0/24"})
}

// testKeepsDatapathAddresses: a Node whose kubelet has not reported
// addresses yet gets its pod CIDR in IPAM without losing the addresses the
// node's datapath recorded there.
func testKeepsDatapathAddresses(t *testing.T, api *apiservertest.Server) {
	ipam := ipamtest.Start(t)
	createHostScopePool(t, ipam)
	const name = "dp-node"
	if _, err := ipam.Alloc.CreateNode(t.Context(), &ipamv1alpha1.Node{Name: name, Addresses: []string{"192.0.2.30"}}); err != nil {
		t.Fatalf("register node as its datapath does: %v", err)
	}
	startController(t, api, ipam.Client)
	createNode(t, api, name, nil, []string{"10.1.4.0/24"})
	waitNode(t, ipam, name, []string{"192.0.2.30"}, []string{"10.1.4.0/24"})
}

// testRetriesFailures: IPAM failing a node's writes delays its
// registration, with each failure counted, until a retry succeeds.
func testRetriesFailures(t *testing.T, api *apiservertest.Server) {
	ipam := ipamtest.Start(t)
	createHostScopePool(t, ipam)
	const name, failures = "retry-node", 3
	flaky := &failingIPAM{IPAMServiceClient: ipam.Client, node: name}
	flaky.failures.Store(failures)
	_, m := startController(t, api, flaky)
	createNode(t, api, name, []string{"192.0.2.40"}, []string{"10.1.5.0/24"})
	waitNode(t, ipam, name, []string{"192.0.2.40"}, []string{"10.1.5.0/24"})
	if got := testutil.ToFloat64(m.reconciles.WithLabelValues(opRegister, "error")); got != failures {
		t.Errorf("failed registrations counted = %v, want %d", got, failures)
	}
}

// failingIPAM fails the first failures UpdateNode calls for node with
// Unavailable.
type failingIPAM struct {
	ipamv1alpha1.IPAMServiceClient
	node     string
	failures atomic.Int32
}

func (f *failingIPAM) UpdateNode(ctx context.Context, req *ipamv1alpha1.UpdateNodeRequest, opts ...grpc.CallOption) (*ipamv1alpha1.UpdateNodeResponse, error) {
	if req.GetNode().GetName() == f.node && f.failures.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "injected failure")
	}
	return f.IPAMServiceClient.UpdateNode(ctx, req, opts...)
}

// startController runs a controller with its own informers until the test
// ends, retrying quickly.
func startController(t *testing.T, api *apiservertest.Server, ipam ipamv1alpha1.IPAMServiceClient) (*Controller, *Metrics) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(api.Client, 0)
	m := NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	c, err := New(api.Client, factory.Core().V1().Nodes(), ipam,
		Config{RetryBase: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		<-done
		factory.Shutdown()
	})
	return c, m
}

// createHostScopePool makes the default dual-stack pool host scope: each
// node's pod CIDRs become its blocks.
func createHostScopePool(t *testing.T, ipam *ipamtest.IPAM) {
	t.Helper()
	if _, err := ipam.Alloc.CreatePool(t.Context(), &ipamv1alpha1.Pool{
		Name: "nodes", Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE, Default: true,
		Ipv4: &ipamv1alpha1.PoolFamily{}, Ipv6: &ipamv1alpha1.PoolFamily{},
	}); err != nil {
		t.Fatalf("create host-scope pool: %v", err)
	}
}

// createNode creates a Node as a kubelet and a node IPAM controller would
// leave it, and deletes it when the test ends.
func createNode(t *testing.T, api *apiservertest.Server, name string, internalIPs, podCIDRs []string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	for _, ip := range internalIPs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	created, err := api.Client.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		// The test's context has ended by now.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = api.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return created
}

// waitNode waits until IPAM has node name with these addresses and pod
// CIDRs, and returns it.
func waitNode(t *testing.T, ipam *ipamtest.IPAM, name string, addrs, podCIDRs []string) *ipamv1alpha1.Node {
	t.Helper()
	var n *ipamv1alpha1.Node
	testpoll.Until(t, waitTimeout, func() error {
		resp, err := ipam.Client.GetNode(t.Context(), &ipamv1alpha1.GetNodeRequest{Name: name})
		if err != nil {
			return err
		}
		n = resp.GetNode()
		if !slices.Equal(n.GetAddresses(), addrs) || !slices.Equal(n.GetPodCidrs(), podCIDRs) {
			return fmt.Errorf("IPAM node %s: addresses %v, pod CIDRs %v; want %v, %v", name, n.GetAddresses(), n.GetPodCidrs(), addrs, podCIDRs)
		}
		return nil
	})
	return n
}

// waitGone waits until IPAM no longer has node name nor any block of it
// (DeleteNode unregisters the node first, then releases what it had).
func waitGone(t *testing.T, ipam *ipamtest.IPAM, name string) {
	t.Helper()
	testpoll.Until(t, waitTimeout, func() error {
		_, err := ipam.Client.GetNode(t.Context(), &ipamv1alpha1.GetNodeRequest{Name: name})
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("IPAM node %s: %v, want NotFound", name, err)
		}
		blocks, err := ipam.Client.ListBlocks(t.Context(), &ipamv1alpha1.ListBlocksRequest{Node: name})
		if err != nil || len(blocks.GetBlocks()) != 0 {
			return fmt.Errorf("blocks of deleted node %s: %v, %v; want none", name, blocks.GetBlocks(), err)
		}
		return nil
	})
}

// testWriter sends the controller's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
