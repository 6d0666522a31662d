package datapath

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netns"
)

// Verdicts as the test harness returns them (a uint32).
const (
	verdictNext     = 0xFFFFFFFF // AXON_TCX_NEXT (-1)
	verdictDrop     = 2          // AXON_TCX_DROP
	verdictRedirect = 7          // AXON_TCX_REDIRECT
)

// The fixture every BPF_PROG_TEST_RUN test uses. Test-run never performs
// the redirect, so the ifindexes need not exist.
var (
	podA = fixtureEndpoint{netip.MustParseAddr("10.244.1.10"), Endpoint{
		Ifindex: 11, ID: 1, PodMAC: mustMAC("02:00:0a:f4:01:0a"), HostMAC: mustMAC("02:00:00:00:11:01"),
	}}
	podB = fixtureEndpoint{netip.MustParseAddr("10.244.1.20"), Endpoint{
		Ifindex: 12, ID: 2, PodMAC: mustMAC("02:00:0a:f4:01:14"), HostMAC: mustMAC("02:00:00:00:12:01"),
	}}
	remoteBlock = netip.MustParsePrefix("10.244.2.0/24")
	remoteNode  = netip.MustParseAddr("192.0.2.2")
	otherNode   = netip.MustParseAddr("192.0.2.3") // a node that owns no block here
	remotePod   = netip.MustParseAddr("10.244.2.30")
	outsideIP   = netip.MustParseAddr("198.51.100.7")
	// The same pods with IPv6 addresses (dual stack), and an IPv6 block of
	// the same remote node: the underlay stays IPv4.
	podA6        = fixtureEndpoint{netip.MustParseAddr("fd00:10:244:1::a"), podA.ep}
	podB6        = fixtureEndpoint{netip.MustParseAddr("fd00:10:244:1::14"), podB.ep}
	remoteBlock6 = netip.MustParsePrefix("fd00:10:244:2::/64")
	remotePod6   = netip.MustParseAddr("fd00:10:244:2::1e")
	outsideIP6   = netip.MustParseAddr("2001:db8:100::7")
	tunnelCfg    = Config{Mode: ModeTunnel, VXLANIfindex: 1000, NodeIP: netip.MustParseAddr("192.0.2.1")}
	nativeCfg    = Config{Mode: ModeNative, NodeIP: netip.MustParseAddr("192.0.2.1")}
	// genevePeerCfg is tunnel mode over a Geneve device.
	genevePeerCfg = Config{Mode: ModeTunnel, VXLANIfindex: 1000, NodeIP: netip.MustParseAddr("192.0.2.1"), Geneve: true}
)

type fixtureEndpoint struct {
	ip netip.Addr
	ep Endpoint
}

// runner runs programs of a loaded datapath with BPF_PROG_TEST_RUN inside a
// private, empty network namespace, so FIB lookups do not depend on the
// host's routes.
type runner struct {
	objs *Objects
	ns   netns.NsHandle
}

func newRunner(t *testing.T) *runner {
	t.Helper()
	objs := mustLoad(t, "")
	ns, err := newNetNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	putFixture(t, objs)
	return &runner{objs: objs, ns: ns}
}

func (r *runner) run(t *testing.T, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	return r.runFrom(t, prog, in, 0)
}

// runFrom runs prog on in as if it arrived on the device ingressIfindex
// (__sk_buff.ingress_ifindex; 0: none).
func (r *runner) runFrom(t *testing.T, prog *ebpf.Program, in []byte, ingressIfindex uint32) (uint32, []byte) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	if ingressIfindex != 0 {
		// struct __sk_buff up to ingress_ifindex (offset 36); the kernel
		// zero-fills the rest.
		var ctx [10]uint32
		ctx[9] = ingressIfindex
		opts.Context = ctx
	}
	var ret uint32
	if err := inNetNS(r.ns, func() (err error) {
		ret, err = prog.Run(&opts)
		return err
	}); err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

func (r *runner) stats(t *testing.T) Stats {
	t.Helper()
	s, err := r.objs.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Which program a TestRun case runs.
type progKind int

const (
	fromPod progKind = iota
	fromOverlay
	fromUnderlay
	toOverlay
)

// TestRun feeds crafted frames to the programs and checks verdicts, output
// frames and counters.
func TestRun(t *testing.T) {
	r := newRunner(t)

	type want int
	const (
		unchanged      want = iota // the frame must come back as it went in
		toPodB                     // rewritten for delivery to podB
		toPodB6                    // rewritten for delivery to podB over IPv6
		decapToPodB                // the VXLAN frame's inner frame, rewritten for podB
		decapToPodB6               // the same over IPv6
		decapCEToPodB              // decapToPodB, marked Congestion Experienced
		decapCEToPodB6             // the same over IPv6
	)
	for _, tc := range []struct {
		name    string
		cfg     Config
		prog    progKind
		frame   []byte
		verdict uint32
		out     want
		counter string
	}{
		{"local", tunnelCfg, fromPod, udp4(podA.ip, podB.ip, 64), verdictRedirect, toPodB, "forwarded-local"},
		{"local ttl 2", tunnelCfg, fromPod, udp4(podA.ip, podB.ip, 2), verdictRedirect, toPodB, "forwarded-local"},
		{"local ip options", tunnelCfg, fromPod, withOptions(udp4(podA.ip, podB.ip, 64), 3), verdictRedirect, toPodB, "forwarded-local"},
		{"local native mode", nativeCfg, fromPod, udp4(podA.ip, podB.ip, 64), verdictRedirect, toPodB, "forwarded-local"},
		{"local ttl 1", tunnelCfg, fromPod, udp4(podA.ip, podB.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"local ttl 0", tunnelCfg, fromPod, udp4(podA.ip, podB.ip, 0), verdictDrop, unchanged, "drop-ttl"},
		{"tunnel", tunnelCfg, fromPod, udp4(podA.ip, remotePod, 64), verdictRedirect, unchanged, "forwarded-tunnel-device"},
		{"tunnel block edge", tunnelCfg, fromPod, udp4(podA.ip, netip.MustParseAddr("10.244.2.255"), 64), verdictRedirect, unchanged, "forwarded-tunnel-device"},
		{"miss", tunnelCfg, fromPod, udp4(podA.ip, outsideIP, 64), verdictNext, unchanged, "to-host"},
		{"next to remote block", tunnelCfg, fromPod, udp4(podA.ip, netip.MustParseAddr("10.244.3.1"), 64), verdictNext, unchanged, "to-host"},
		// The private namespace has no routes: the FIB cannot forward.
		{"native no route", nativeCfg, fromPod, udp4(podA.ip, remotePod, 64), verdictNext, unchanged, "fib-miss"},
		{"native ttl 1", nativeCfg, fromPod, udp4(podA.ip, remotePod, 1), verdictDrop, unchanged, "drop-ttl"},
		{"native miss", nativeCfg, fromPod, udp4(podA.ip, outsideIP, 64), verdictNext, unchanged, "to-host"},
		{"unconfigured", Config{}, fromPod, udp4(podA.ip, podB.ip, 64), verdictNext, unchanged, "unconfigured"},
		{"arp", tunnelCfg, fromPod, arpFrame(), verdictNext, unchanged, "non-ipv4"},
		// Test-run refuses IPv4 frames shorter than an IPv4 header (EINVAL):
		// TestRealTruncated sends those through a veth instead.
		{"ipv4 truncated payload", tunnelCfg, fromPod, udp4(podA.ip, podB.ip, 64)[:14+20], verdictRedirect, toPodB, "forwarded-local"},
		{"ipv4 version 6", tunnelCfg, fromPod, patch(udp4(podA.ip, podB.ip, 64), 14, 0x65), verdictDrop, unchanged, "drop-malformed"},
		{"ipv4 ihl 4", tunnelCfg, fromPod, patch(udp4(podA.ip, podB.ip, 64), 14, 0x44), verdictDrop, unchanged, "drop-malformed"},

		{"overlay local", tunnelCfg, fromOverlay, udp4(remotePod, podB.ip, 63), verdictRedirect, toPodB, "from-overlay-local"},
		{"overlay local native", nativeCfg, fromOverlay, udp4(remotePod, podB.ip, 63), verdictRedirect, toPodB, "from-overlay-local"},
		{"overlay from a node", tunnelCfg, fromOverlay, udp4(remoteNode, podB.ip, 63), verdictNext, unchanged, "from-overlay-to-host"},
		{"overlay from outside v6", tunnelCfg, fromOverlay, udp6(outsideIP6, podB6.ip, 63), verdictNext, unchanged, "from-overlay-to-host"},
		{"overlay ttl 1", tunnelCfg, fromOverlay, udp4(remotePod, podB.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"overlay miss", tunnelCfg, fromOverlay, udp4(remotePod, outsideIP, 63), verdictNext, unchanged, "from-overlay-to-host"},
		{"overlay ihl 4", tunnelCfg, fromOverlay, patch(udp4(remotePod, podB.ip, 63), 14, 0x44), verdictDrop, unchanged, "drop-malformed"},
		{"overlay unconfigured", Config{}, fromOverlay, udp4(remotePod, podB.ip, 63), verdictNext, unchanged, "unconfigured"},

		// IPv6: the same paths as IPv4.
		{"v6 local", tunnelCfg, fromPod, udp6(podA6.ip, podB6.ip, 64), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 local hop 2", tunnelCfg, fromPod, udp6(podA6.ip, podB6.ip, 2), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 local native mode", nativeCfg, fromPod, udp6(podA6.ip, podB6.ip, 64), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 local hop-by-hop", tunnelCfg, fromPod, withHopByHop(udp6(podA6.ip, podB6.ip, 64)), verdictRedirect, toPodB6, "forwarded-local"},
		// A link-local source is never forwarded to another link (RFC 4291).
		{"v6 local from link-local", tunnelCfg, fromPod, udp6(netip.MustParseAddr("fe80::1"), podB6.ip, 64), verdictDrop, unchanged, "drop-spoofed"},
		// A pod sends from its own address only.
		{"local from no pod's address", tunnelCfg, fromPod, udp4(outsideIP, podB.ip, 64), verdictDrop, unchanged, "drop-spoofed"},
		{"tunnel from a remote pod's address", tunnelCfg, fromPod, udp4(remotePod, podA.ip, 64), verdictDrop, unchanged, "drop-spoofed"},
		{"v6 from no pod's address", tunnelCfg, fromPod, udp6(outsideIP6, remotePod6, 64), verdictDrop, unchanged, "drop-spoofed"},
		{"v6 echo request", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 128), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 icmp 132", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 132), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 icmp 138", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 138), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 icmp without type", tunnelCfg, fromPod, ip6Frame(podA6.ip, podB6.ip, 64, 58, nil), verdictRedirect, toPodB6, "forwarded-local"},
		{"v6 local hop 1", tunnelCfg, fromPod, udp6(podA6.ip, podB6.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"v6 local hop 0", tunnelCfg, fromPod, udp6(podA6.ip, podB6.ip, 0), verdictDrop, unchanged, "drop-ttl"},
		{"v6 tunnel", tunnelCfg, fromPod, udp6(podA6.ip, remotePod6, 64), verdictRedirect, unchanged, "forwarded-tunnel-device"},
		{"v6 tunnel hop 1", tunnelCfg, fromPod, udp6(podA6.ip, remotePod6, 1), verdictRedirect, unchanged, "forwarded-tunnel-device"},
		{"v6 tunnel block edge", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("fd00:10:244:2:ffff:ffff:ffff:ffff"), 64), verdictRedirect, unchanged, "forwarded-tunnel-device"},
		{"v6 miss", tunnelCfg, fromPod, udp6(podA6.ip, outsideIP6, 64), verdictNext, unchanged, "to-host"},
		{"v6 next to remote block", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("fd00:10:244:3::1"), 64), verdictNext, unchanged, "to-host"},
		{"v6 site-local is not link-local", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("fec0::1"), 64), verdictNext, unchanged, "to-host"},
		{"v6 IPv4 address as IPv6", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("::ffff:10.244.1.20"), 64), verdictNext, unchanged, "to-host"},
		{"v6 native no route", nativeCfg, fromPod, udp6(podA6.ip, remotePod6, 64), verdictNext, unchanged, "fib-miss"},
		{"v6 native hop 1", nativeCfg, fromPod, udp6(podA6.ip, remotePod6, 1), verdictDrop, unchanged, "drop-ttl"},
		{"v6 native miss", nativeCfg, fromPod, udp6(podA6.ip, outsideIP6, 64), verdictNext, unchanged, "to-host"},
		{"v6 unconfigured", Config{}, fromPod, udp6(podA6.ip, podB6.ip, 64), verdictNext, unchanged, "unconfigured"},
		// What the node must handle itself goes to the kernel, in any mode,
		// even to a pod's address.
		{"v6 RS", tunnelCfg, fromPod, icmp6(netip.MustParseAddr("fe80::a"), netip.MustParseAddr("ff02::2"), 133), verdictNext, unchanged, "non-ipv4"},
		{"v6 RA", tunnelCfg, fromPod, icmp6(netip.MustParseAddr("fe80::a"), netip.MustParseAddr("ff02::1"), 134), verdictNext, unchanged, "non-ipv4"},
		{"v6 NS multicast", tunnelCfg, fromPod, icmp6(podA6.ip, netip.MustParseAddr("ff02::1:ff00:14"), 135), verdictNext, unchanged, "non-ipv4"},
		{"v6 NS unicast to pod", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 135), verdictNext, unchanged, "non-ipv4"},
		{"v6 NA to pod", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 136), verdictNext, unchanged, "non-ipv4"},
		{"v6 NA to remote block", tunnelCfg, fromPod, icmp6(podA6.ip, remotePod6, 136), verdictNext, unchanged, "non-ipv4"},
		{"v6 redirect to pod", tunnelCfg, fromPod, icmp6(podA6.ip, podB6.ip, 137), verdictNext, unchanged, "non-ipv4"},
		{"v6 DAD NS from ::", tunnelCfg, fromPod, icmp6(netip.IPv6Unspecified(), netip.MustParseAddr("ff02::1:ff00:a"), 135), verdictNext, unchanged, "non-ipv4"},
		{"v6 ND-typed from :: to a global address", tunnelCfg, fromPod, icmp6(netip.IPv6Unspecified(), remotePod6, 135), verdictDrop, unchanged, "drop-spoofed"},
		// ND-typed ICMPv6 the node may forward: not from a foreign address.
		{"v6 NA from a foreign address", tunnelCfg, fromPod, icmp6(outsideIP6, remotePod6, 136), verdictDrop, unchanged, "drop-spoofed"},
		{"v6 NS to multicast from a foreign address", tunnelCfg, fromPod, icmp6(outsideIP6, netip.MustParseAddr("ff02::16"), 135), verdictDrop, unchanged, "drop-spoofed"},
		{"v6 NS unconfigured", Config{}, fromPod, icmp6(podA6.ip, podB6.ip, 135), verdictNext, unchanged, "non-ipv4"},
		{"v6 NS hop 1", tunnelCfg, fromPod, patch(icmp6(podA6.ip, podB6.ip, 135), 21, 1), verdictNext, unchanged, "non-ipv4"},
		{"v6 link-local", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("fe80::14"), 64), verdictNext, unchanged, "non-ipv4"},
		{"v6 link-local edge", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("febf:ffff::1"), 64), verdictNext, unchanged, "non-ipv4"},
		{"v6 multicast", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("ff02::1"), 64), verdictNext, unchanged, "non-ipv4"},
		{"v6 multicast global", tunnelCfg, fromPod, udp6(podA6.ip, netip.MustParseAddr("ff0e::1"), 1), verdictNext, unchanged, "non-ipv4"},
		{"v6 version 4", tunnelCfg, fromPod, patch(udp6(podA6.ip, podB6.ip, 64), 14, 0x45), verdictDrop, unchanged, "drop-malformed"},
		// Test-run refuses IPv6 frames shorter than an IPv6 header too: the
		// truncated subtests of the real tests send those.
		{"v6 truncated payload", tunnelCfg, fromPod, udp6(podA6.ip, podB6.ip, 64)[:14+40], verdictRedirect, toPodB6, "forwarded-local"},

		{"overlay v6 local", tunnelCfg, fromOverlay, udp6(remotePod6, podB6.ip, 63), verdictRedirect, toPodB6, "from-overlay-local"},
		{"overlay v6 local native", nativeCfg, fromOverlay, udp6(remotePod6, podB6.ip, 63), verdictRedirect, toPodB6, "from-overlay-local"},
		{"overlay v6 hop 1", tunnelCfg, fromOverlay, udp6(remotePod6, podB6.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"overlay v6 miss", tunnelCfg, fromOverlay, udp6(remotePod6, outsideIP6, 63), verdictNext, unchanged, "from-overlay-to-host"},
		{"overlay v6 NS", nativeCfg, fromOverlay, icmp6(remotePod6, netip.MustParseAddr("ff02::1:ff00:14"), 135), verdictNext, unchanged, "non-ipv4"},
		{"overlay v6 NA to pod", nativeCfg, fromOverlay, icmp6(remotePod6, podB6.ip, 136), verdictNext, unchanged, "non-ipv4"},
		{"overlay v6 link-local", tunnelCfg, fromOverlay, udp6(remotePod6, netip.MustParseAddr("fe80::14"), 63), verdictNext, unchanged, "non-ipv4"},
		{"overlay v6 version 4", tunnelCfg, fromOverlay, patch(udp6(remotePod6, podB6.ip, 63), 14, 0x45), verdictDrop, unchanged, "drop-malformed"},
		{"overlay v6 unconfigured", Config{}, fromOverlay, udp6(remotePod6, podB6.ip, 63), verdictNext, unchanged, "unconfigured"},

		// axon_from_underlay, native mode: frames routed to this node (its
		// MAC) for a local pod are delivered; the rest is the kernel's.
		{"underlay native", nativeCfg, fromUnderlay, toNode(udp4(remotePod, podB.ip, 63)), verdictRedirect, toPodB, "from-overlay-local"},
		{"underlay native v6", nativeCfg, fromUnderlay, toNode(udp6(remotePod6, podB6.ip, 63)), verdictRedirect, toPodB6, "from-overlay-local"},
		// From a non-pod address (another node itself, an outside router):
		// through the kernel, so its connection tracking sees the flow.
		{"underlay native from a node", nativeCfg, fromUnderlay, toNode(udp4(remoteNode, podB.ip, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native from a local pod address", nativeCfg, fromUnderlay, toNode(udp4(podA.ip, podB.ip, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native v6 from a local pod address", nativeCfg, fromUnderlay, toNode(udp6(podA6.ip, podB6.ip, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native v6 from outside", nativeCfg, fromUnderlay, toNode(udp6(outsideIP6, podB6.ip, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native other MAC", nativeCfg, fromUnderlay, udp4(remotePod, podB.ip, 63), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native miss", nativeCfg, fromUnderlay, toNode(udp4(remotePod, outsideIP, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay native ttl 1", nativeCfg, fromUnderlay, toNode(udp4(remotePod, podB.ip, 1)), verdictDrop, unchanged, "drop-ttl"},
		{"underlay native arp", nativeCfg, fromUnderlay, toNode(arpFrame()), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay unconfigured", Config{}, fromUnderlay, toNode(udp4(remotePod, podB.ip, 63)), verdictNext, unchanged, "unconfigured"},
		// Tunnel mode: Axon's VXLAN for a local pod is decapsulated and
		// delivered; any other VXLAN, UDP or IP goes on to the kernel.
		{"underlay vxlan", tunnelCfg, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), verdictRedirect, decapToPodB, "from-overlay-local"},
		{"underlay vxlan v6", tunnelCfg, fromUnderlay, vxlan4(udp6(remotePod6, podB6.ip, 63), tunnelVNI, vxlanPort), verdictRedirect, decapToPodB6, "from-overlay-local"},
		// Only a block's own node may send for its pods: a VXLAN packet from
		// another sender, or claiming a source on this node, is the kernel's.
		{"underlay vxlan from another node", tunnelCfg, fromUnderlay, vxlan4From(otherNode, udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-foreign"},
		{"underlay vxlan v6 from another node", tunnelCfg, fromUnderlay, vxlan4From(otherNode, udp6(remotePod6, podB6.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-foreign"},
		{"underlay vxlan from a local pod address", tunnelCfg, fromUnderlay, vxlan4(udp4(podA.ip, podB.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-foreign"},
		// ECN (RFC 6040): congestion marked on the underlay reaches an
		// ECN-capable inner packet; a packet that is not ECN-capable is the
		// kernel's to drop.
		{"underlay vxlan CE into ECT(0)", tunnelCfg, fromUnderlay, withTOS(vxlan4(withTOS(udp4(remotePod, podB.ip, 63), 0x02), tunnelVNI, vxlanPort), 0x03), verdictRedirect, decapCEToPodB, "from-overlay-local"},
		{"underlay vxlan CE into ECT(1) with DSCP", tunnelCfg, fromUnderlay, withTOS(vxlan4(withTOS(udp4(remotePod, podB.ip, 63), 0xb9), tunnelVNI, vxlanPort), 0x03), verdictRedirect, decapCEToPodB, "from-overlay-local"},
		{"underlay vxlan CE into CE", tunnelCfg, fromUnderlay, withTOS(vxlan4(withTOS(udp4(remotePod, podB.ip, 63), 0x03), tunnelVNI, vxlanPort), 0x03), verdictRedirect, decapToPodB, "from-overlay-local"},
		{"underlay vxlan ECT(0) outer", tunnelCfg, fromUnderlay, withTOS(vxlan4(withTOS(udp4(remotePod, podB.ip, 63), 0x02), tunnelVNI, vxlanPort), 0x02), verdictRedirect, decapToPodB, "from-overlay-local"},
		{"underlay vxlan CE into not ECT", tunnelCfg, fromUnderlay, withTOS(vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), 0x03), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan v6 CE into ECT(0)", tunnelCfg, fromUnderlay, withTOS(vxlan4(udp6(remotePod6, podB6.ip, 63), tunnelVNI, vxlanPort), 0x03), verdictRedirect, decapCEToPodB6, "from-overlay-local"},
		{"underlay vxlan v6 CE into not ECT", tunnelCfg, fromUnderlay, withTOS(vxlan4(withTClass(udp6(remotePod6, podB6.ip, 63), 0x2c), tunnelVNI, vxlanPort), 0x03), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan from a node", tunnelCfg, fromUnderlay, vxlan4(udp4(remoteNode, podB.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan v6 from outside", tunnelCfg, fromUnderlay, vxlan4(udp6(outsideIP6, podB6.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan unconfigured node address", Config{Mode: ModeTunnel, VXLANIfindex: 1000}, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan ttl 1", tunnelCfg, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 1), tunnelVNI, vxlanPort), verdictDrop, unchanged, "drop-ttl"},
		{"underlay vxlan for the node", tunnelCfg, fromUnderlay, vxlan4(udp4(remotePod, tunnelCfg.NodeIP, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan other vni", tunnelCfg, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI+1, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan other port", tunnelCfg, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, 4789), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan other MAC", tunnelCfg, fromUnderlay, patch(vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), 0, 0x02), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan fragment", tunnelCfg, fromUnderlay, withChecksum(patch(vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), 14+6, 0x20)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay vxlan geneve mode", genevePeerCfg, fromUnderlay, vxlan4(udp4(remotePod, podB.ip, 63), tunnelVNI, vxlanPort), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay plain udp", tunnelCfg, fromUnderlay, toNode(udp4(remoteNode, tunnelCfg.NodeIP, 63)), verdictNext, unchanged, "from-underlay-to-host"},
		{"underlay tunnel local pod unencapsulated", tunnelCfg, fromUnderlay, toNode(udp4(remotePod, podB.ip, 63)), verdictNext, unchanged, "from-underlay-to-host"},

		// axon_to_overlay: the tunnel key for the node's own traffic into the
		// overlay (test-run cannot show the key; the tunnel tests use it).
		{"out v4", tunnelCfg, toOverlay, udp4(podA.ip, remotePod, 64), verdictNext, unchanged, "forwarded-tunnel-device"},
		{"out v4 miss", tunnelCfg, toOverlay, udp4(podA.ip, outsideIP, 64), verdictDrop, unchanged, "drop-tunnel"},
		{"out arp", tunnelCfg, toOverlay, arpFrame(), verdictDrop, unchanged, "non-ipv4"},
		{"out native mode", nativeCfg, toOverlay, udp4(podA.ip, remotePod, 64), verdictDrop, unchanged, "unconfigured"},
		{"out v6", tunnelCfg, toOverlay, udp6(podA6.ip, remotePod6, 64), verdictNext, unchanged, "forwarded-tunnel-device"},
		{"out v6 miss", tunnelCfg, toOverlay, udp6(podA6.ip, outsideIP6, 64), verdictDrop, unchanged, "drop-tunnel"},
		{"out v6 local pod", tunnelCfg, toOverlay, udp6(remotePod6, podB6.ip, 64), verdictDrop, unchanged, "drop-tunnel"},
		{"out v6 NS", tunnelCfg, toOverlay, icmp6(podA6.ip, netip.MustParseAddr("ff02::1:ff00:1e"), 135), verdictNext, unchanged, "non-ipv4"},
		{"out v6 multicast", tunnelCfg, toOverlay, udp6(podA6.ip, netip.MustParseAddr("ff02::16"), 1), verdictNext, unchanged, "non-ipv4"},
		{"out v6 unconfigured", Config{}, toOverlay, udp6(podA6.ip, remotePod6, 64), verdictDrop, unchanged, "unconfigured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.objs.SetConfig(tc.cfg); err != nil {
				t.Fatal(err)
			}
			prog := map[progKind]*ebpf.Program{
				fromPod:      r.objs.FromPod(),
				fromOverlay:  r.objs.FromOverlay(),
				fromUnderlay: r.objs.FromUnderlay(),
				toOverlay:    r.objs.ToOverlay(),
			}[tc.prog]
			before := r.stats(t)
			verdict, out := r.run(t, prog, tc.frame)
			after := r.stats(t)

			if verdict != tc.verdict {
				t.Errorf("verdict %d, want %d", int32(verdict), int32(tc.verdict))
			}
			switch tc.out {
			case unchanged:
				if !bytes.Equal(out, tc.frame) {
					t.Errorf("frame changed:\n got % x\nwant % x", out, tc.frame)
				}
			case toPodB:
				checkDelivered(t, tc.frame, out, podB.ep)
			case toPodB6:
				checkDelivered6(t, tc.frame, out, podB6.ep)
			case decapToPodB:
				checkDelivered(t, tc.frame[vxlanOverhead:], out, podB.ep)
			case decapToPodB6:
				checkDelivered6(t, tc.frame[vxlanOverhead:], out, podB6.ep)
			case decapCEToPodB:
				in := bytes.Clone(tc.frame[vxlanOverhead:])
				in[15] |= 0x03
				checkDelivered(t, in, out, podB.ep)
			case decapCEToPodB6:
				in := bytes.Clone(tc.frame[vxlanOverhead:])
				in[15] |= 0x30
				checkDelivered6(t, in, out, podB6.ep)
			}
			// Exactly one counter moves, by one.
			b, a := before.Map(), after.Map()
			for name := range a {
				d := a[name] - b[name]
				if name == tc.counter && d != 1 || name != tc.counter && d != 0 {
					t.Errorf("counter %s moved by %d", name, d)
				}
			}
		})
	}
}

// checkDelivered checks a frame rewritten for delivery to ep: MACs of the
// endpoint, TTL one less, a valid header checksum, nothing else changed.
func checkDelivered(t *testing.T, in, out []byte, ep Endpoint) {
	t.Helper()
	if len(out) != len(in) {
		t.Fatalf("length %d, want %d", len(out), len(in))
	}
	if !bytes.Equal(out[0:6], ep.PodMAC) || !bytes.Equal(out[6:12], ep.HostMAC) {
		t.Errorf("MACs dst %x src %x, want dst %s src %s", out[0:6], out[6:12], ep.PodMAC, ep.HostMAC)
	}
	ttlOff, checkOff := 14+8, 14+10
	if out[ttlOff] != in[ttlOff]-1 {
		t.Errorf("TTL %d, want %d", out[ttlOff], in[ttlOff]-1)
	}
	ihl := int(in[14]&0x0f) * 4
	hdr := out[14 : 14+ihl]
	if s := onesSum(hdr); s != 0xffff {
		t.Errorf("IPv4 header checksum %#04x invalid (sum %#04x)", binary.BigEndian.Uint16(out[checkOff:]), s)
	}
	// Everything but TTL and checksum is untouched.
	masked := func(b []byte) []byte {
		c := bytes.Clone(b[12:])
		c[ttlOff-12] = 0
		c[checkOff-12], c[checkOff-12+1] = 0, 0
		return c
	}
	if !bytes.Equal(masked(in), masked(out)) {
		t.Errorf("frame changed beyond MACs, TTL and checksum:\n got % x\nwant % x", out, in)
	}
}

// checkDelivered6 checks an IPv6 frame rewritten for delivery to ep: MACs
// of the endpoint, hop limit one less, nothing else changed (IPv6 has no
// header checksum).
func checkDelivered6(t *testing.T, in, out []byte, ep Endpoint) {
	t.Helper()
	if len(out) != len(in) {
		t.Fatalf("length %d, want %d", len(out), len(in))
	}
	if !bytes.Equal(out[0:6], ep.PodMAC) || !bytes.Equal(out[6:12], ep.HostMAC) {
		t.Errorf("MACs dst %x src %x, want dst %s src %s", out[0:6], out[6:12], ep.PodMAC, ep.HostMAC)
	}
	const hopOff = 14 + 7
	if out[hopOff] != in[hopOff]-1 {
		t.Errorf("hop limit %d, want %d", out[hopOff], in[hopOff]-1)
	}
	masked := func(b []byte) []byte {
		c := bytes.Clone(b[12:])
		c[hopOff-12] = 0
		return c
	}
	if !bytes.Equal(masked(in), masked(out)) {
		t.Errorf("frame changed beyond MACs and hop limit:\n got % x\nwant % x", out, in)
	}
}

// TestSourceFromItsOwnDevice: a pod's address counts as its own only on its
// own host-side veths; another pod cannot send with it.
func TestSourceFromItsOwnDevice(t *testing.T) {
	r := newRunner(t)
	if err := r.objs.SetConfig(tunnelCfg); err != nil {
		t.Fatal(err)
	}
	for dev, pod := range map[int]uint32{podA.ep.Ifindex: 1, podB.ep.Ifindex: 2, 13: 1} {
		if err := r.objs.PutDevice(dev, pod); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		ingress uint32
		want    uint32
		counter string
	}{
		{"podA's address from podA's veth", uint32(podA.ep.Ifindex), verdictRedirect, "forwarded-local"},
		{"podA's address from podB's veth", uint32(podB.ep.Ifindex), verdictDrop, "drop-spoofed"},
		// podA's second attachment (another network): its veth is podA's.
		{"podA's address from podA's other veth", 13, verdictRedirect, "forwarded-local"},
		// A veth of no known pod.
		{"podA's address from an unknown veth", 14, verdictDrop, "drop-spoofed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.stats(t).Map()
			verdict, _ := r.runFrom(t, r.objs.FromPod(), udp4(podA.ip, podB.ip, 64), tc.ingress)
			after := r.stats(t).Map()
			if verdict != tc.want || after[tc.counter]-before[tc.counter] != 1 {
				t.Errorf("verdict %d, %s +%d; want %d and +1", int32(verdict), tc.counter, after[tc.counter]-before[tc.counter], int32(tc.want))
			}
		})
	}
}

// TestTTLChecksum checks the incremental checksum update against many
// headers, including the checksum values where the carry folds.
func TestTTLChecksum(t *testing.T) {
	r := newRunner(t)
	if err := r.objs.SetConfig(tunnelCfg); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var frames [][]byte
	for range 300 {
		// The source must be podA's own; TOS, ID, TTL and options vary.
		f := withOptions(udp4(podA.ip, podB.ip, uint8(2+rng.IntN(254))), rng.IntN(11))
		f[15] = uint8(rng.Uint32()) // TOS
		setID(f, uint16(rng.Uint32()))
		frames = append(frames, f)
	}
	// Checksums at the fold: pick IDs that produce them.
	edge := map[uint16]bool{0x0000: false, 0x0001: false, 0x00ff: false, 0x0100: false, 0xfeff: false, 0xff00: false, 0xfffe: false}
	base := udp4(podA.ip, podB.ip, 64)
	for id := 0; id <= 0xffff; id++ {
		setID(base, uint16(id))
		if c := binary.BigEndian.Uint16(base[24:]); !edge[c] {
			if _, ok := edge[c]; ok {
				edge[c] = true
				frames = append(frames, bytes.Clone(base))
			}
		}
	}
	for c, found := range edge {
		if !found {
			t.Errorf("no ID yields checksum %#04x", c)
		}
	}
	for _, f := range frames {
		verdict, out := r.run(t, r.objs.FromPod(), f)
		if verdict != verdictRedirect {
			t.Fatalf("verdict %d for % x", int32(verdict), f)
		}
		checkDelivered(t, f, out, podB.ep)
		if t.Failed() {
			t.Fatalf("input % x", f)
		}
	}
}

// TestCEChecksum checks the incremental checksum update of a CE mark (with
// the TTL decrement after it) against many inner headers, including the
// checksum values where the carry folds.
func TestCEChecksum(t *testing.T) {
	r := newRunner(t)
	if err := r.objs.SetConfig(tunnelCfg); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var inner [][]byte
	for range 300 {
		src := remoteBlock.Addr().As4()
		src[3] = uint8(rng.Uint32())
		f := withOptions(udp4(netip.AddrFrom4(src), podB.ip, uint8(2+rng.IntN(254))), rng.IntN(11))
		f[15] = uint8(rng.Uint32())&0xfc | uint8(1+rng.IntN(2)) // any DSCP, ECT(1) or ECT(0)
		setID(f, uint16(rng.Uint32()))
		inner = append(inner, f)
	}
	edge := map[uint16]bool{0x0000: false, 0x0001: false, 0x00ff: false, 0x0100: false, 0xfeff: false, 0xff00: false, 0xfffe: false}
	base := withTOS(udp4(remotePod, podB.ip, 64), 0x02)
	for id := 0; id <= 0xffff; id++ {
		setID(base, uint16(id))
		if c := binary.BigEndian.Uint16(base[24:]); !edge[c] {
			if _, ok := edge[c]; ok {
				edge[c] = true
				inner = append(inner, bytes.Clone(base))
			}
		}
	}
	for c, found := range edge {
		if !found {
			t.Errorf("no ID yields checksum %#04x", c)
		}
	}
	for _, f := range inner {
		verdict, out := r.run(t, r.objs.FromUnderlay(), withTOS(vxlan4(bytes.Clone(f), tunnelVNI, vxlanPort), 0x03))
		if verdict != verdictRedirect {
			t.Fatalf("verdict %d for inner % x", int32(verdict), f)
		}
		want := bytes.Clone(f)
		want[15] |= 0x03
		checkDelivered(t, want, out, podB.ep)
		if t.Failed() {
			t.Fatalf("inner % x", f)
		}
	}
}

// Benchmarks: per-packet cost of the programs as BPF_PROG_TEST_RUN measures
// it, beside an empty program (the harness floor). Each call runs the program
// `batch` times on one skb: test-run reuses it, so the TTL drops by one per
// run and a batch must stay below the starting TTL of 255.
const batch = 200

func BenchmarkEmpty(b *testing.B) {
	requireBPF(b)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	benchRun(b, prog, udp4(podA.ip, podB.ip, 255), verdictNext)
}

func BenchmarkFromPodLocal(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp4(podA.ip, podB.ip, 255), verdictRedirect)
}

func BenchmarkFromPodTunnel(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp4(podA.ip, remotePod, 255), verdictRedirect)
}

func BenchmarkFromPodToHost(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp4(podA.ip, outsideIP, 255), verdictNext)
}

func BenchmarkFromOverlayLocal(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromOverlay(), udp4(remotePod, podB.ip, 255), verdictRedirect)
}

// putFixture writes the fixture's endpoints and remote blocks, both
// families.
func putFixture(t testing.TB, objs *Objects) {
	t.Helper()
	for _, e := range []fixtureEndpoint{podA, podB, podA6, podB6} {
		if err := objs.PutEndpoint(e.ip, e.ep); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []netip.Prefix{remoteBlock, remoteBlock6} {
		if err := objs.PutRemote(p, remoteNode); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkFromPodLocal6(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp6(podA6.ip, podB6.ip, 255), verdictRedirect)
}

func BenchmarkFromPodTunnel6(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp6(podA6.ip, remotePod6, 255), verdictRedirect)
}

func BenchmarkFromPodToHost6(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), udp6(podA6.ip, outsideIP6, 255), verdictNext)
}

// BenchmarkFromPodND6 is the cost of recognising neighbour discovery to a
// unicast address (the ICMPv6 type is read with bpf_skb_load_bytes).
func BenchmarkFromPodND6(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), icmp6(podA6.ip, podB6.ip, 135), verdictNext)
}

func BenchmarkFromOverlayLocal6(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromOverlay(), udp6(remotePod6, podB6.ip, 255), verdictRedirect)
}

func benchObjects(b *testing.B, cfg Config) *Objects {
	objs := mustLoad(b, "")
	putFixture(b, objs)
	if err := objs.SetConfig(cfg); err != nil {
		b.Fatal(err)
	}
	return objs
}

// benchRun reports the kernel-measured time per program run as ns/op
// (syscall and skb setup excluded).
func benchRun(b *testing.B, prog *ebpf.Program, frame []byte, verdict uint32) {
	b.Helper()
	var total time.Duration
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		ret, per, err := prog.Benchmark(frame, n, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != verdict {
			b.Fatalf("verdict %d, want %d", int32(ret), int32(verdict))
		}
		total += per * time.Duration(n)
		done += n
	}
	b.ReportMetric(float64(total)/float64(b.N), "ns/op")
}

// udp4 builds Ethernet + IPv4 + UDP with a valid header checksum, as podA's
// host-side veth would receive it.
func udp4(src, dst netip.Addr, ttl uint8) []byte {
	payload := []byte("axon datapath test")
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], podA.ep.HostMAC)
	copy(f[6:12], podA.ep.PodMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = ttl
	ip[9] = 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 7777)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	setChecksum(f)
	return f
}

// withOptions inserts words 32-bit words of IPv4 options (NOPs and a
// timestamp-like filler) and fixes lengths and checksum.
func withOptions(f []byte, words int) []byte {
	if words == 0 {
		return f
	}
	opts := bytes.Repeat([]byte{0x01}, 4*words) // NOP
	out := append(append(bytes.Clone(f[:14+20]), opts...), f[14+20:]...)
	out[14] = 0x40 | uint8(5+words)
	binary.BigEndian.PutUint16(out[16:], binary.BigEndian.Uint16(f[16:])+uint16(4*words))
	setChecksum(out)
	return out
}

func setID(f []byte, id uint16) {
	binary.BigEndian.PutUint16(f[18:], id)
	setChecksum(f)
}

// withTOS sets the TOS byte of the IPv4 header at f[14:] (the outer one of
// a VXLAN frame) and its checksum.
func withTOS(f []byte, tos byte) []byte {
	f[15] = tos
	setChecksum(f)
	return f
}

// withTClass sets the traffic class of the IPv6 header at f[14:].
func withTClass(f []byte, tc byte) []byte {
	f[14] = 6<<4 | tc>>4
	f[15] = f[15]&0x0f | tc<<4
	return f
}

func setChecksum(f []byte) {
	hdr := f[14 : 14+int(f[14]&0x0f)*4]
	hdr[10], hdr[11] = 0, 0
	binary.BigEndian.PutUint16(hdr[10:], ^onesSum(hdr))
}

// onesSum is the folded one's-complement sum of b's 16-bit words; a header
// with a valid checksum sums to 0xffff.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Axon's VXLAN: its VNI and port (AXON_TUNNEL_VNI, AXON_VXLAN_PORT), and
// what decapsulation removes after the outer Ethernet header.
const (
	tunnelVNI     = 2
	vxlanPort     = 8472
	vxlanOverhead = 20 + 8 + 8 + 14
)

// vxlan4 wraps the Ethernet frame inner in outer Ethernet (to the node's
// MAC), IPv4 (remoteNode to the tunnel node address), UDP to port and a
// VXLAN header with vni, as another node's axon_vxlan sends it.
func vxlan4(inner []byte, vni uint32, port uint16) []byte {
	return vxlan4From(remoteNode, inner, vni, port)
}

// vxlan4From is vxlan4 sent by the node at outer.
func vxlan4From(outer netip.Addr, inner []byte, vni uint32, port uint16) []byte {
	f := make([]byte, 14+vxlanOverhead-14+len(inner))
	copy(f[6:12], mustMAC("02:00:c0:00:02:02"))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	ip[8] = 64
	ip[9] = 17
	s, d := outer.As4(), tunnelCfg.NodeIP.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 50000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(f)-14-20))
	vx := udp[8:]
	vx[0] = 0x08
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	copy(vx[8:], inner)
	setChecksum(f)
	return f
}

// withChecksum recomputes the outer IPv4 header checksum after a patch.
func withChecksum(f []byte) []byte {
	setChecksum(f)
	return f
}

// toNode addresses f to the test-run device (loopback, MAC zero), so the
// kernel marks it PACKET_HOST as a frame for the node's own underlay MAC.
func toNode(f []byte) []byte {
	clear(f[0:6])
	return f
}

func patch(f []byte, off int, v byte) []byte {
	f[off] = v
	return f
}

// ip6Frame builds Ethernet + IPv6 with next header nh and payload l4, as
// podA's host-side veth would receive it. Traffic class and flow label are
// set so that a rewrite of the first word would show.
func ip6Frame(src, dst netip.Addr, hop, nh uint8, l4 []byte) []byte {
	f := make([]byte, 14+40+len(l4))
	copy(f[0:6], podA.ep.HostMAC)
	copy(f[6:12], podA.ep.PodMAC)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	binary.BigEndian.PutUint32(ip[0:], 6<<28|0x2e<<20|0xbeef5)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = nh
	ip[7] = hop
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	copy(ip[40:], l4)
	return f
}

// udp6 builds Ethernet + IPv6 + UDP (checksum left 0: nothing checks it).
func udp6(src, dst netip.Addr, hop uint8) []byte {
	payload := []byte("axon datapath test")
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 7777)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	return ip6Frame(src, dst, hop, 17, udp)
}

// icmp6 builds an ICMPv6 message of type typ: 8 bytes of header and a
// 16-byte target address, the shape of NS/NA (hop limit 255, as ND
// requires).
func icmp6(src, dst netip.Addr, typ uint8) []byte {
	msg := make([]byte, 8+16)
	msg[0] = typ
	t := dst.As16()
	copy(msg[8:], t[:])
	return ip6Frame(src, dst, 255, 58, msg)
}

// withHopByHop inserts an 8-byte hop-by-hop options header (PadN) after the
// fixed IPv6 header.
func withHopByHop(f []byte) []byte {
	hbh := []byte{f[14+6], 0, 1, 4, 0, 0, 0, 0}
	out := append(append(bytes.Clone(f[:14+40]), hbh...), f[14+40:]...)
	out[14+6] = 0
	binary.BigEndian.PutUint16(out[14+4:], binary.BigEndian.Uint16(f[14+4:])+8)
	return out
}

func arpFrame() []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], podA.ep.PodMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	copy(f[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	return f
}
