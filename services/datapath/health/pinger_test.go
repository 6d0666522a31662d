package health

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/internal/nstest"
)

// TestPinger: one socket serves concurrent probes, each getting its own
// reply; a silent address times out.
func TestPinger(t *testing.T) {
	ns := nstest.New(t)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}
	if err := ns.Netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Netlink.LinkByName("probe0")
	if err == nil {
		err = ns.Netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}})
	}
	if err == nil {
		err = ns.Netlink.LinkSetUp(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	var p *pinger
	if err := ns.Do(func() (err error) { p, err = newPinger(); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := p.ping(t.Context(), netip.MustParseAddr("127.0.0.1"))
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("ping 127.0.0.1: %v", err)
		}
	}
	// On the veth's subnet, but nobody answers (the peer end has no address).
	if _, err := p.ping(t.Context(), netip.MustParseAddr("192.0.2.77")); err == nil {
		t.Error("ping of a silent address succeeded")
	}
}
