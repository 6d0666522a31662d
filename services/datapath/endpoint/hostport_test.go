package endpoint

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/lb"
)

// TestHostPortsOf: a mapping without a host address goes on every node
// address of each pod family; with one, to the pod's address of its
// family only.
func TestHostPortsOf(t *testing.T) {
	tcp, udp := commonv1alpha1.Protocol_PROTOCOL_TCP, commonv1alpha1.Protocol_PROTOCOL_UDP
	ep := &datapathv1alpha1.Endpoint{
		Ips: []*datapathv1alpha1.IPConfig{{Address: "10.0.0.5/32"}, {Address: "fd00::5/128"}},
		PortMappings: []*datapathv1alpha1.PortMapping{
			{HostPort: 80, ContainerPort: 8080, Protocol: tcp},
			{HostPort: 53, ContainerPort: 5353, Protocol: udp, HostIp: "192.0.2.1"},
			{HostPort: 443, ContainerPort: 8443, Protocol: tcp, HostIp: "::"},
		},
	}
	want := []lb.HostPort{
		{Addr: netip.IPv4Unspecified(), Port: 80, Proto: 6, Backend: netip.MustParseAddrPort("10.0.0.5:8080")},
		{Addr: netip.IPv6Unspecified(), Port: 80, Proto: 6, Backend: netip.MustParseAddrPort("[fd00::5]:8080")},
		{Addr: netip.MustParseAddr("192.0.2.1"), Port: 53, Proto: 17, Backend: netip.MustParseAddrPort("10.0.0.5:5353")},
		{Addr: netip.IPv4Unspecified(), Port: 443, Proto: 6, Backend: netip.MustParseAddrPort("10.0.0.5:8443")},
		{Addr: netip.IPv6Unspecified(), Port: 443, Proto: 6, Backend: netip.MustParseAddrPort("[fd00::5]:8443")},
	}
	if got := hostPortsOf(ep); !slices.Equal(got, want) {
		t.Errorf("hostPortsOf = %v\nwant %v", got, want)
	}
}

// TestValidPortMappings refuses bad ports, protocols and host addresses.
func TestValidPortMappings(t *testing.T) {
	ok := &datapathv1alpha1.PortMapping{HostPort: 80, ContainerPort: 8080, Protocol: commonv1alpha1.Protocol_PROTOCOL_TCP}
	for _, tc := range []struct {
		name string
		pm   func(*datapathv1alpha1.PortMapping)
	}{
		{"host port 0", func(p *datapathv1alpha1.PortMapping) { p.HostPort = 0 }},
		{"container port above 65535", func(p *datapathv1alpha1.PortMapping) { p.ContainerPort = 65536 }},
		{"ICMP", func(p *datapathv1alpha1.PortMapping) { p.Protocol = commonv1alpha1.Protocol_PROTOCOL_ICMP }},
		{"bad host IP", func(p *datapathv1alpha1.PortMapping) { p.HostIp = "node-1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pm := &datapathv1alpha1.PortMapping{HostPort: ok.HostPort, ContainerPort: ok.ContainerPort, Protocol: ok.Protocol}
			tc.pm(pm)
			if err := validPortMappings([]*datapathv1alpha1.PortMapping{ok, pm}); !errors.Is(err, ErrInvalid) {
				t.Errorf("validPortMappings: %v, want ErrInvalid", err)
			}
		})
	}
	if err := validPortMappings([]*datapathv1alpha1.PortMapping{ok}); err != nil {
		t.Errorf("valid mapping refused: %v", err)
	}
}
