package datapath

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// runLocal runs a UDP (or TCP) packet from src to dst through axon_from_pod,
// which must deliver it to a local pod, and returns the tuple it leaves
// with.
func runLocal(t *testing.T, o *Objects, proto uint8, src, dst netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	t.Helper()
	in := l4Frame(src, dst, proto, tcpACK, false)
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	verdict, err := o.FromPod().Run(&opts)
	if err != nil || verdict != verdictRedirect {
		s, _ := o.Stats()
		t.Fatalf("%s -> %s: verdict %#x, %v (%v)", src, dst, verdict, err, s.Map())
	}
	return tuple(opts.DataOut[:len(in)])
}

// TestUnpinFlows: an unpinned UDP flow's next datagram picks a backend
// anew (here the one left), while the answer its old backend sent still
// comes back from the frontend; DeleteFlows drops both directions.
func TestUnpinFlows(t *testing.T) {
	o := mustLoad(t, "")
	putFixture(t, o)
	must(t, "config", o.SetConfig(tunnelCfg))
	fe := frontend(vip, 53, protoUDP)
	old, next := ap(podB.ip, 5300), ap(podB.ip, 5301)
	putServices(t, o, ServiceEntry{Frontend: fe, Service: Service{ID: 1, Active: []Backend{{Addr: old.Addr(), Port: old.Port(), Local: true}}}})
	client := ap(podA.ip, 40000)
	if _, dst := runLocal(t, o, protoUDP, client, ap(vip, 53)); dst != old {
		t.Fatalf("first datagram went to %s", dst)
	}
	putServices(t, o, ServiceEntry{Frontend: fe, Service: Service{ID: 1, Active: []Backend{{Addr: next.Addr(), Port: next.Port(), Local: true}}}})
	n, err := o.UnpinFlows(func(f Flow) bool { return f.Backend == old })
	if err != nil || n != 1 {
		t.Fatalf("UnpinFlows = %d, %v; want 1 flow", n, err)
	}
	if src, _ := runLocal(t, o, protoUDP, old, client); src != ap(vip, 53) {
		t.Errorf("answer of the old backend after unpinning comes from %s, want the frontend", src)
	}
	if _, dst := runLocal(t, o, protoUDP, client, ap(vip, 53)); dst != next {
		t.Errorf("next datagram went to %s, want %s", dst, next)
	}
	if src, _ := runLocal(t, o, protoUDP, next, client); src != ap(vip, 53) {
		t.Errorf("answer of the new backend comes from %s, want the frontend", src)
	}
	if n, err := o.DeleteFlows(func(Flow) bool { return true }); err != nil || n != 1 {
		t.Fatalf("DeleteFlows = %d, %v; want 1 flow", n, err)
	}
	if src, _ := runLocal(t, o, protoUDP, next, client); src != next {
		t.Errorf("answer after DeleteFlows comes from %s, want untranslated %s", src, next)
	}
}
