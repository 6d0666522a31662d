package agent

import (
	"errors"
	"testing"

	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestEnsureTunnel(t *testing.T) {
	ns := nstest.New(t)
	idx, err := ensureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil {
		t.Fatalf("VXLAN: %v", err)
	}
	again, err := ensureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil || again != idx {
		t.Fatalf("second ensureTunnel = %d, %v; want the same device %d", again, err, idx)
	}
	l, err := ns.Netlink.LinkByName(VXLANDevice)
	if err != nil || l.Attrs().MTU != 1450 || l.Attrs().RawFlags&0x80 == 0 /* IFF_NOARP */ {
		t.Fatalf("axon_vxlan = %+v, %v; want MTU 1450 and NOARP", l, err)
	}

	_, err = ensureTunnel(ns.Netlink, TunnelGeneve, 1450)
	switch {
	case err == nil:
		t.Log("this kernel supports Geneve; the device was created")
	case errors.Is(err, ErrNoGeneve):
		// The expected answer on a kernel without Geneve: a clear error.
	default:
		t.Fatalf("Geneve: %v, want success or ErrNoGeneve", err)
	}
}
