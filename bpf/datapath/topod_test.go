package datapath

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestToPodRun: a service whose backend is no pod (the node's own address,
// as the kubernetes Service's API server): the pod's connection goes to the
// kernel translated, and the backend's reply, which the kernel routes into
// the pod, is translated back by axon_to_pod, with valid checksums; the
// kernel's other packets into the pod pass untouched. IPv4 and IPv6, TCP
// and UDP (also IPv4 UDP without checksum); each packet moves one counter.
func TestToPodRun(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	for _, fam := range []struct {
		name               string
		client, vip, backd netip.Addr
	}{
		{"v4", podA.ip, vip, nodeIP},
		{"v6", podA6.ip, vip6, nodeIP6},
	} {
		for _, proto := range []uint8{protoTCP, protoUDP} {
			for _, noCsum := range []bool{false, true} {
				if noCsum && (proto == protoTCP || fam.name == "v6") {
					continue
				}
				name := fam.name + map[uint8]string{protoTCP: " tcp", protoUDP: " udp"}[proto]
				if noCsum {
					name += " no checksum"
				}
				t.Run(name, func(t *testing.T) {
					fe := frontend(fam.vip, 443, proto)
					backend := ap(fam.backd, 6443)
					putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 9,
						Active: []Backend{{Addr: backend.Addr(), Port: backend.Port()}}}})
					t.Cleanup(func() { _ = r.objs.DeleteServices([]Frontend{fe}) })
					client := ap(fam.client, 40000)

					in := l4Frame(client, ap(fam.vip, 443), proto, tcpSYN, noCsum)
					verdict, out := r.run(t, r.objs.FromPod(), in)
					if s, d := tuple(out[:len(in)]); verdict != verdictNext || s != client || d != backend {
						t.Fatalf("to the service: verdict %#x, %s -> %s; want next, %s -> %s", verdict, s, d, client, backend)
					}

					before := r.stats(t)
					reply := l4Frame(backend, client, proto, tcpSYN|tcpACK, noCsum)
					verdict, back := r.run(t, r.objs.ToPod(), reply)
					back = back[:len(reply)]
					if s, d := tuple(back); verdict != verdictNext || s != ap(fam.vip, 443) || d != client {
						t.Fatalf("reply: verdict %#x, %s -> %s; want next, %s -> %s", verdict, s, d, ap(fam.vip, 443), client)
					}
					checkSums(t, back, noCsum)

					// Not a reply of the flow (another client port, the
					// backend's address from another port): untouched.
					for _, other := range [][]byte{
						l4Frame(backend, ap(fam.client, 40001), proto, tcpSYN|tcpACK, noCsum),
						l4Frame(ap(fam.backd, 22), client, proto, tcpACK, noCsum),
					} {
						verdict, got := r.run(t, r.objs.ToPod(), other)
						if s, d := tuple(other); verdict != verdictNext || !bytes.Equal(got[:len(other)], other) {
							t.Errorf("%s -> %s: verdict %#x, out %x; want next, untouched", s, d, verdict, got[:len(other)])
						}
					}
					after := r.stats(t)
					if n := after.KernelToPod - before.KernelToPod; n != 3 || after.Total()-before.Total() != 3 {
						t.Errorf("3 packets: kernel-to-pod moved by %d, all counters by %d", n, after.Total()-before.Total())
					}
				})
			}
		}
	}
}
