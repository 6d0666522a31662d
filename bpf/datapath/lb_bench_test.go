package datapath

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// lbBenchObjects is benchObjects on a node with n other services (two
// backends each) programmed before the frontends the benchmarks use, which
// come last:
//   - vip:80/TCP with two local backends (new connections);
//   - podB:8080/TCP to podB:8081 and podB:8081/TCP to podB:8080 (and the
//     same with their IPv6 addresses), a pair
//     that translates a flow's packets back and forth (backends other than
//     the client podA, which would make it a hairpin): once both have
//     seen a first packet from podA:40000, every packet of that flow is an
//     established one and every reply from either backend a reply, however
//     often test-run repeats it on one skb (each run rewrites both
//     addresses and a port, as a real translation does).
func lbBenchObjects(b *testing.B, n int) *Objects {
	b.Helper()
	requireBPF(b)
	objs, err := Load("", LoadOptions{ServiceMapMax: uint32(max(DefaultServiceMapMax, 2*n))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	putFixture(b, objs)
	if err := objs.SetConfig(tunnelCfg); err != nil {
		b.Fatal(err)
	}
	entries := make([]ServiceEntry, 0, n+3)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
		entries = append(entries, ServiceEntry{Frontend: frontend(a, 80, protoTCP), Service: Service{ID: uint32(i + 100), Active: []Backend{
			{Addr: remotePod, Port: 8080}, {Addr: podB.ip, Port: 8080, Local: true},
		}}})
	}
	entries = append(entries,
		ServiceEntry{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Active: []Backend{
			{Addr: podB.ip, Port: 8080, Local: true}, {Addr: podB.ip, Port: 8081, Local: true},
		}}},
		ServiceEntry{Frontend: frontend(podB.ip, 8080, protoTCP), Service: Service{ID: 2, Active: []Backend{
			{Addr: podB.ip, Port: 8081, Local: true},
		}}},
		ServiceEntry{Frontend: frontend(podB.ip, 8081, protoTCP), Service: Service{ID: 3, Active: []Backend{
			{Addr: podB.ip, Port: 8080, Local: true},
		}}},
		ServiceEntry{Frontend: frontend(podB6.ip, 8080, protoTCP), Service: Service{ID: 4, Active: []Backend{
			{Addr: podB6.ip, Port: 8081, Local: true},
		}}},
		ServiceEntry{Frontend: frontend(podB6.ip, 8081, protoTCP), Service: Service{ID: 5, Active: []Backend{
			{Addr: podB6.ip, Port: 8080, Local: true},
		}}},
	)
	if err := objs.PutServices(entries); err != nil {
		b.Fatal(err)
	}
	// The pairs' two flows from podA:40000 (podA6), first packets.
	for _, dst := range []netip.AddrPort{ap(podB.ip, 8080), ap(podB.ip, 8081), ap(podB6.ip, 8080), ap(podB6.ip, 8081)} {
		src := ap(podA.ip, 40000)
		if dst.Addr().Is6() {
			src = ap(podA6.ip, 40000)
		}
		if ret, _, err := objs.FromPod().Benchmark(withTTL(l4Frame(src, dst, protoTCP, tcpSYN, false), 255), 1, nil); err != nil || ret != verdictRedirect {
			b.Fatalf("first packet to %s: verdict %d, %v", dst, int32(ret), err)
		}
	}
	return objs
}

// BenchmarkLB is the per-packet cost of service load balancing in
// axon_from_pod (issue 12's target: at most 50 ns for the service lookup at
// every size), at 0, 1k, 10k and 100k services besides the few measured:
//   - first: the first packet of a connection to a frontend (pick, record,
//     translate), one run per call (compare with pod-once, measured the same
//     way);
//   - established, reply (and established6, reply6 over IPv6): a packet
//     of a translated flow, each way;
//   - pod: traffic between pods that is not a service's, on a node with
//     services (what the lookups add to everything else);
//   - no-lb/pod (pod6): the same packet on a node that never had a
//     service (the baseline of all but first).
//
// Every packet is TCP from or to podA, delivered to a local pod. Compare
// builds side by side: `go test -run '^$' -bench BenchmarkLB -count 1`,
// interleaved, medians.
func BenchmarkLB(b *testing.B) {
	podFrame := func() []byte {
		return withTTL(l4Frame(ap(podA.ip, 40000), ap(podB.ip, 9000), protoTCP, tcpACK, false), 255)
	}
	b.Run("no-lb", func(b *testing.B) {
		objs := benchObjects(b, tunnelCfg)
		b.Run("pod", func(b *testing.B) { benchRun(b, objs.FromPod(), podFrame(), verdictRedirect) })
		b.Run("pod6", func(b *testing.B) {
			benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podA6.ip, 40000), ap(podB6.ip, 9000), protoTCP, tcpACK, false), 255), verdictRedirect)
		})
		b.Run("pod-once", func(b *testing.B) { benchRunOnce(b, objs.FromPod(), podFrame(), verdictRedirect) })
	})
	for _, n := range []int{0, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			objs := lbBenchObjects(b, n)
			b.Run("first", func(b *testing.B) { benchFirstPackets(b, objs) })
			b.Run("established", func(b *testing.B) {
				benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podA.ip, 40000), ap(podB.ip, 8080), protoTCP, tcpACK, false), 255), verdictRedirect)
			})
			b.Run("reply", func(b *testing.B) {
				benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podB.ip, 8080), ap(podA.ip, 40000), protoTCP, tcpACK, false), 255), verdictRedirect)
			})
			b.Run("established6", func(b *testing.B) {
				benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podA6.ip, 40000), ap(podB6.ip, 8080), protoTCP, tcpACK, false), 255), verdictRedirect)
			})
			b.Run("reply6", func(b *testing.B) {
				benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podB6.ip, 8080), ap(podA6.ip, 40000), protoTCP, tcpACK, false), 255), verdictRedirect)
			})
			b.Run("pod", func(b *testing.B) { benchRun(b, objs.FromPod(), podFrame(), verdictRedirect) })
			b.Run("pod-once", func(b *testing.B) { benchRunOnce(b, objs.FromPod(), podFrame(), verdictRedirect) })
		})
	}
}

// benchFirstPackets runs first packets of new connections to vip:80, one
// run per call (test-run's skb keeps the translation), and reports the
// kernel's time per run. Flows are deleted off the clock now and then.
func benchFirstPackets(b *testing.B, objs *Objects) {
	b.Helper()
	const flowsKept = 20000
	var total time.Duration
	for i := range b.N {
		if i%flowsKept == flowsKept-1 {
			if _, err := objs.DeleteFlows(func(f Flow) bool { return f.ServiceID == 1 }); err != nil {
				b.Fatal(err)
			}
		}
		frame := l4Frame(ap(podA.ip, uint16(1024+i%flowsKept)), ap(vip, 80), protoTCP, tcpSYN, false)
		ret, per, err := objs.FromPod().Benchmark(frame, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != verdictRedirect {
			b.Fatalf("verdict %d, want %d", int32(ret), int32(verdictRedirect))
		}
		total += per
	}
	b.ReportMetric(float64(total)/float64(b.N), "ns/op")
}
