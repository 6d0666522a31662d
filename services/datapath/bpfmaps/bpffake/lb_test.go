package bpffake_test

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

func lbEntry(addr string, id uint32, backends ...string) bpfmaps.LBEntry {
	e := bpfmaps.LBEntry{
		Key:     bpfmaps.LBKey{Addr: netip.MustParseAddr(addr), Port: 80, Proto: unix.IPPROTO_TCP},
		Service: bpfmaps.LBService{ID: id, Type: bpfmaps.LBTypeClusterIP},
	}
	for _, b := range backends {
		ap := netip.MustParseAddrPort(b)
		e.Service.Active = append(e.Service.Active, bpfmaps.LBBackend{Addr: ap.Addr(), Port: ap.Port()})
	}
	return e
}

func TestPutServicesValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry func(e *bpfmaps.LBEntry)
		ok    bool
		want  error // wrapped, when set
	}{
		{"valid", func(*bpfmaps.LBEntry) {}, true, nil},
		{"IPv4-mapped frontend", func(e *bpfmaps.LBEntry) { e.Key.Addr = netip.MustParseAddr("::ffff:10.96.0.1") }, false, bpfdp.ErrInvalidAddress},
		{"ICMP", func(e *bpfmaps.LBEntry) { e.Key.Proto = unix.IPPROTO_ICMP }, false, nil},
		{"ID 0", func(e *bpfmaps.LBEntry) { e.Service.ID = 0 }, false, nil},
		{"no type", func(e *bpfmaps.LBEntry) { e.Service.Type = 0 }, false, nil},
		{"meta too long", func(e *bpfmaps.LBEntry) { e.Service.Meta = make([]byte, bpfmaps.MaxLBMeta+1) }, false, nil},
		{"backend of the other family", func(e *bpfmaps.LBEntry) {
			e.Service.Terminating = []bpfmaps.LBBackend{{Addr: netip.MustParseAddr("2001:db8::1"), Port: 80}}
		}, false, bpfdp.ErrInvalidAddress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bpffake.New()
			e := lbEntry("10.96.0.1", 1, "10.0.0.1:8080")
			tc.entry(&e)
			err := f.PutServices([]bpfmaps.LBEntry{e})
			if (err == nil) != tc.ok || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("PutServices = %v, want ok %v (%v)", err, tc.ok, tc.want)
			}
			if !tc.ok && len(f.LBEntries()) != 0 {
				t.Error("a refused entry was written")
			}
		})
	}
}

// TestServicesCapacityAndPartialWrites checks that a full service map
// fails with E2BIG after the entries before it, and that an injected
// mid-batch failure writes the entries before it only.
func TestServicesCapacityAndPartialWrites(t *testing.T) {
	f := bpffake.New()
	f.SetServiceCapacity(2)
	err := f.PutServices([]bpfmaps.LBEntry{lbEntry("10.96.0.1", 1), lbEntry("10.96.0.2", 2), lbEntry("10.96.0.3", 3)})
	if !errors.Is(err, unix.E2BIG) || len(f.LBEntries()) != 2 {
		t.Fatalf("PutServices past capacity = %v with %d entries; want E2BIG after 2", err, len(f.LBEntries()))
	}
	if err := f.PutServices([]bpfmaps.LBEntry{lbEntry("10.96.0.1", 1, "10.0.0.1:80")}); err != nil {
		t.Errorf("replacing an entry of a full map = %v", err)
	}
	usage, err := f.Usage()
	if err != nil || usage[0] != (bpfmaps.MapUsage{Name: bpffake.ServiceMap, Entries: 2, Capacity: 2}) {
		t.Errorf("Usage = %v, %v", usage, err)
	}

	f.SetServiceCapacity(0)
	f.FailPutServicesAfter(1, errInjected)
	err = f.PutServices([]bpfmaps.LBEntry{lbEntry("10.96.0.4", 4), lbEntry("10.96.0.5", 5)})
	if !errors.Is(err, errInjected) || len(f.LBEntries()) != 3 {
		t.Errorf("PutServices failing after 1 = %v with %d entries; want the injected error, 3 entries", err, len(f.LBEntries()))
	}
	if err := f.DeleteServices([]bpfmaps.LBKey{lbEntry("10.96.0.4", 0).Key, lbEntry("10.9.9.9", 0).Key}); err != nil || len(f.LBEntries()) != 2 {
		t.Errorf("DeleteServices = %v, %d entries left; want 2", err, len(f.LBEntries()))
	}
	f.FailOn(bpffake.OpServices, 1, errInjected)
	if _, err := f.Services(); !errors.Is(err, errInjected) {
		t.Errorf("Services with an injected failure = %v", err)
	}
}

func TestFlows(t *testing.T) {
	f := bpffake.New()
	udp := bpfmaps.Flow{ServiceID: 1, Proto: unix.IPPROTO_UDP}
	tcp := bpfmaps.Flow{ServiceID: 1, Proto: unix.IPPROTO_TCP}
	f.AddFlow(udp)
	f.AddFlow(tcp)
	if n, err := f.ExpireFlows(); n != 0 || err != nil {
		t.Errorf("ExpireFlows with nothing idle = %d, %v", n, err)
	}
	n, err := f.DeleteFlows(func(fl bpfmaps.Flow) bool { return fl.Proto == unix.IPPROTO_UDP })
	if n != 1 || err != nil || len(f.Flows()) != 1 || f.Flows()[0] != tcp {
		t.Errorf("DeleteFlows = %d, %v; flows %v", n, err, f.Flows())
	}
	f.SetExpired(func(bpfmaps.Flow) bool { return true })
	if n, err := f.ExpireFlows(); n != 1 || err != nil || len(f.Flows()) != 0 {
		t.Errorf("ExpireFlows = %d, %v; flows %v", n, err, f.Flows())
	}
}
