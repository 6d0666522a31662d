package nodes

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSpec checks how a Node becomes IPAM's node: InternalIPs only, in
// order, canonical and once each; pod CIDRs canonical, from the singular
// field when the plural one is empty (old clusters).
func TestSpec(t *testing.T) {
	addr := func(typ corev1.NodeAddressType, a string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: typ, Address: a}
	}
	for _, tc := range []struct {
		name              string
		addrs             []corev1.NodeAddress
		podCIDR           string
		podCIDRs          []string
		wantAddrs, wantPC []string
		wantErr           bool
	}{
		{
			name:      "dual stack",
			addrs:     []corev1.NodeAddress{addr(corev1.NodeInternalIP, "192.0.2.1"), addr(corev1.NodeHostName, "n"), addr(corev1.NodeInternalIP, "2001:DB8::1")},
			podCIDRs:  []string{"10.0.0.0/24", "fd00::/64"},
			wantAddrs: []string{"192.0.2.1", "2001:db8::1"},
			wantPC:    []string{"10.0.0.0/24", "fd00::/64"},
		},
		{
			name:      "external and duplicate addresses left out",
			addrs:     []corev1.NodeAddress{addr(corev1.NodeExternalIP, "198.51.100.1"), addr(corev1.NodeInternalIP, "192.0.2.1"), addr(corev1.NodeInternalIP, "::ffff:192.0.2.1")},
			wantAddrs: []string{"192.0.2.1"},
		},
		{
			name:    "singular pod CIDR, not canonical",
			podCIDR: "10.0.0.7/24",
			wantPC:  []string{"10.0.0.0/24"},
		},
		{name: "bad InternalIP", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "not-an-ip")}, wantErr: true},
		{name: "bad pod CIDR", podCIDRs: []string{"10.0.0.0/33"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "n"},
				Spec:       corev1.NodeSpec{PodCIDR: tc.podCIDR, PodCIDRs: tc.podCIDRs},
				Status:     corev1.NodeStatus{Addresses: tc.addrs},
			}
			got, err := spec(node)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("spec() = %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.GetAddresses(), tc.wantAddrs) || !slices.Equal(got.GetPodCidrs(), tc.wantPC) {
				t.Errorf("spec() = addresses %v, pod CIDRs %v; want %v, %v", got.GetAddresses(), got.GetPodCidrs(), tc.wantAddrs, tc.wantPC)
			}
		})
	}
}
