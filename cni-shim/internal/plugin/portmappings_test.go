package plugin

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/axon-cni/axon/cni-shim/internal/config"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// TestPortMappings converts the portMappings capability (protocol
// defaulting to TCP, case-insensitive) and refuses bad entries.
func TestPortMappings(t *testing.T) {
	got, err := portMappings([]config.PortMapping{
		{HostPort: 8080, ContainerPort: 80},
		{HostPort: 53, ContainerPort: 5353, Protocol: "UDP", HostIP: "192.0.2.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*datapathv1alpha1.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: commonv1alpha1.Protocol_PROTOCOL_TCP},
		{HostPort: 53, ContainerPort: 5353, Protocol: commonv1alpha1.Protocol_PROTOCOL_UDP, HostIp: "192.0.2.1"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []config.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "sctp"},
		{HostPort: 0, ContainerPort: 80},
		{HostPort: 8080, ContainerPort: 70000},
	} {
		if _, err := portMappings([]config.PortMapping{bad}); err == nil {
			t.Errorf("portMappings(%+v) accepted", bad)
		}
	}
}
