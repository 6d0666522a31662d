package main

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/axon-cni/axon/bpf/testpoll"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon/daemontest"
	"github.com/axon-cni/axon/services/operator/internal/apiservertest"
	"github.com/axon-cni/axon/services/operator/internal/ipamtest"
)

// TestNotServingWithoutKubernetes checks that axon-operator outside a pod
// and without --kubeconfig starts, never reports SERVING and says why,
// once.
func TestNotServingWithoutKubernetes(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	conn, log := daemontest.Serve(t, spec())
	reason := ErrNoKubernetes.Error()
	daemontest.WaitLogged(t, log, reason)
	// Several check intervals later the status has not changed and the
	// lasting failure was logged only once as a failed check.
	time.Sleep(5 * daemontest.HealthInterval)
	if got := daemontest.Health(t, conn, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health = %s, want NOT_SERVING", got)
	}
	if n := bytes.Count(log.Bytes(), []byte("health check failed")); n != 1 {
		t.Errorf("failed check logged %d times, want once; log:\n%s", n, log.Bytes())
	}
}

// TestRegistersNodesWithIPAM runs axon-operator against a real apiserver
// and IPAM: it becomes SERVING, a Node created in Kubernetes is registered
// with IPAM, and health turns NOT_SERVING when IPAM stops answering.
func TestRegistersNodesWithIPAM(t *testing.T) {
	api := apiservertest.Start(t)
	ipam := ipamtest.Start(t)
	conn, log := daemontest.Serve(t, spec(), "--kubeconfig", api.Kubeconfig, "--ipam-target", ipam.Target)
	testpoll.Until(t, 30*time.Second, func() error {
		if got := daemontest.Health(t, conn, ""); got != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health = %s, want SERVING; log:\n%s", got, log.Bytes())
		}
		return nil
	})

	const name = "main-node"
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: "10.2.0.0/24", PodCIDRs: []string{"10.2.0.0/24"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.50"}}},
	}
	if _, err := api.Client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	testpoll.Until(t, 30*time.Second, func() error {
		resp, err := ipam.Client.GetNode(t.Context(), &ipamv1alpha1.GetNodeRequest{Name: name})
		if err != nil {
			return err
		}
		if n := resp.GetNode(); !slices.Equal(n.GetAddresses(), []string{"192.0.2.50"}) || !slices.Equal(n.GetPodCidrs(), []string{"10.2.0.0/24"}) {
			return fmt.Errorf("IPAM node: addresses %v, pod CIDRs %v", n.GetAddresses(), n.GetPodCidrs())
		}
		return nil
	})

	ipam.Stop()
	testpoll.Until(t, 30*time.Second, func() error {
		if got := daemontest.Health(t, conn, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
			return fmt.Errorf("health with IPAM stopped = %s, want NOT_SERVING", got)
		}
		return nil
	})
}
