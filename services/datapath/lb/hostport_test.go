package lb

import (
	"errors"
	"net/netip"
	"testing"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

// TestHostPorts: host port entries are written with IDs of their own,
// never listed or replaced by the API's services (a resync leaves them),
// taken back after a restart, and deleted.
func TestHostPorts(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	hps := []HostPort{
		{Addr: netip.IPv4Unspecified(), Port: 8088, Proto: 6, Backend: mustAddrPort("10.0.0.5:8080")},
		{Addr: netip.IPv6Unspecified(), Port: 8088, Proto: 6, Backend: mustAddrPort("[fd00::5]:8080")},
	}
	if err := m.PutHostPorts(t.Context(), hps); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(t.Context(), []*datapathv1alpha1.Service{service("10.96.0.1", 80, tcp, clusterIP, "10.0.0.9:80")}, nil, true); err != nil {
		t.Fatal(err)
	}
	entries, err := fake.Services()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint32]bool{}
	hostPorts := 0
	for _, e := range entries {
		ids[e.Service.ID] = true
		if e.Service.Type == bpfmaps.LBTypeHostPort {
			hostPorts++
			if len(e.Service.Active) != 1 || !e.Service.Active[0].Local {
				t.Errorf("host port entry %+v: want one local backend", e)
			}
		}
	}
	if hostPorts != 2 || len(ids) != 3 {
		t.Fatalf("entries %+v: want 2 host ports and a service, distinct IDs", entries)
	}
	if got := listAll(t, m); len(got) != 1 {
		t.Errorf("listed %d services, want the API's one", len(got))
	}
	// A host port on a service's frontend is refused.
	err = m.PutHostPorts(t.Context(), []HostPort{{Addr: netip.MustParseAddr("10.96.0.1"), Port: 80, Proto: 6, Backend: mustAddrPort("10.0.0.5:80")}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("host port on a service frontend: %v, want ErrInvalid", err)
	}

	// Another pod takes the IPv4 host port: the first pod's delete
	// leaves it.
	other := HostPort{Addr: netip.IPv4Unspecified(), Port: 8088, Proto: 6, Backend: mustAddrPort("10.0.0.6:8080")}
	if err := m.PutHostPorts(t.Context(), []HostPort{other}); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteHostPorts(t.Context(), hps[:1]); err != nil {
		t.Fatal(err)
	}
	if entries, _ := fake.Services(); len(entries) != 3 {
		t.Fatalf("entries %+v: the other pod's host port must stay", entries)
	}

	// After a restart the entries are still there, and deleted by key.
	m2 := newManager(t, fake)
	if err := m2.DeleteHostPorts(t.Context(), []HostPort{hps[1], other}); err != nil {
		t.Fatal(err)
	}
	entries, err = fake.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.Type != bpfmaps.LBTypeClusterIP {
		t.Errorf("entries after DeleteHostPorts: %+v, want only the service", entries)
	}
}
