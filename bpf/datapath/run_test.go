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
	remotePod   = netip.MustParseAddr("10.244.2.30")
	outsideIP   = netip.MustParseAddr("198.51.100.7")
	tunnelCfg   = Config{Mode: ModeTunnel, VXLANIfindex: 1000, NodeIP: netip.MustParseAddr("192.0.2.1")}
	nativeCfg   = Config{Mode: ModeNative, NodeIP: netip.MustParseAddr("192.0.2.1")}
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
	for _, e := range []fixtureEndpoint{podA, podB} {
		if err := objs.PutEndpoint(e.ip, e.ep); err != nil {
			t.Fatal(err)
		}
	}
	if err := objs.PutRemote(remoteBlock, remoteNode); err != nil {
		t.Fatal(err)
	}
	return &runner{objs: objs, ns: ns}
}

func (r *runner) run(t *testing.T, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
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

// TestRun feeds crafted frames to both programs and checks verdicts, output
// frames and counters.
func TestRun(t *testing.T) {
	r := newRunner(t)

	type want int
	const (
		unchanged want = iota // the frame must come back as it went in
		toPodB                // rewritten for delivery to podB
	)
	for _, tc := range []struct {
		name    string
		cfg     Config
		overlay bool // axon_from_overlay instead of axon_from_pod
		frame   []byte
		verdict uint32
		out     want
		counter string
	}{
		{"local", tunnelCfg, false, udp4(podA.ip, podB.ip, 64), verdictRedirect, toPodB, "forwarded-local"},
		{"local ttl 2", tunnelCfg, false, udp4(podA.ip, podB.ip, 2), verdictRedirect, toPodB, "forwarded-local"},
		{"local ip options", tunnelCfg, false, withOptions(udp4(podA.ip, podB.ip, 64), 3), verdictRedirect, toPodB, "forwarded-local"},
		{"local native mode", nativeCfg, false, udp4(podA.ip, podB.ip, 64), verdictRedirect, toPodB, "forwarded-local"},
		{"local ttl 1", tunnelCfg, false, udp4(podA.ip, podB.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"local ttl 0", tunnelCfg, false, udp4(podA.ip, podB.ip, 0), verdictDrop, unchanged, "drop-ttl"},
		{"tunnel", tunnelCfg, false, udp4(podA.ip, remotePod, 64), verdictRedirect, unchanged, "forwarded-tunnel"},
		{"tunnel block edge", tunnelCfg, false, udp4(podA.ip, netip.MustParseAddr("10.244.2.255"), 64), verdictRedirect, unchanged, "forwarded-tunnel"},
		{"miss", tunnelCfg, false, udp4(podA.ip, outsideIP, 64), verdictNext, unchanged, "to-host"},
		{"next to remote block", tunnelCfg, false, udp4(podA.ip, netip.MustParseAddr("10.244.3.1"), 64), verdictNext, unchanged, "to-host"},
		// The private namespace has no routes: the FIB cannot forward.
		{"native no route", nativeCfg, false, udp4(podA.ip, remotePod, 64), verdictNext, unchanged, "fib-miss"},
		{"native ttl 1", nativeCfg, false, udp4(podA.ip, remotePod, 1), verdictDrop, unchanged, "drop-ttl"},
		{"native miss", nativeCfg, false, udp4(podA.ip, outsideIP, 64), verdictNext, unchanged, "to-host"},
		{"unconfigured", Config{}, false, udp4(podA.ip, podB.ip, 64), verdictNext, unchanged, "unconfigured"},
		{"ipv6", tunnelCfg, false, ipv6Frame(), verdictNext, unchanged, "non-ipv4"},
		{"arp", tunnelCfg, false, arpFrame(), verdictNext, unchanged, "non-ipv4"},
		// Test-run refuses IPv4 frames shorter than an IPv4 header (EINVAL):
		// TestRealTruncated sends those through a veth instead.
		{"ipv4 truncated payload", tunnelCfg, false, udp4(podA.ip, podB.ip, 64)[:14+20], verdictRedirect, toPodB, "forwarded-local"},
		{"ipv4 version 6", tunnelCfg, false, patch(udp4(podA.ip, podB.ip, 64), 14, 0x65), verdictDrop, unchanged, "drop-malformed"},
		{"ipv4 ihl 4", tunnelCfg, false, patch(udp4(podA.ip, podB.ip, 64), 14, 0x44), verdictDrop, unchanged, "drop-malformed"},

		{"overlay local", tunnelCfg, true, udp4(remotePod, podB.ip, 63), verdictRedirect, toPodB, "from-overlay-local"},
		{"overlay local native", nativeCfg, true, udp4(remotePod, podB.ip, 63), verdictRedirect, toPodB, "from-overlay-local"},
		{"overlay ttl 1", tunnelCfg, true, udp4(remotePod, podB.ip, 1), verdictDrop, unchanged, "drop-ttl"},
		{"overlay miss", tunnelCfg, true, udp4(remotePod, outsideIP, 63), verdictNext, unchanged, "from-overlay-to-host"},
		{"overlay ipv6", tunnelCfg, true, ipv6Frame(), verdictNext, unchanged, "non-ipv4"},
		{"overlay ihl 4", tunnelCfg, true, patch(udp4(remotePod, podB.ip, 63), 14, 0x44), verdictDrop, unchanged, "drop-malformed"},
		{"overlay unconfigured", Config{}, true, udp4(remotePod, podB.ip, 63), verdictNext, unchanged, "unconfigured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.objs.SetConfig(tc.cfg); err != nil {
				t.Fatal(err)
			}
			prog := r.objs.FromPod()
			if tc.overlay {
				prog = r.objs.FromOverlay()
			}
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
		var src [4]byte
		binary.BigEndian.PutUint32(src[:], rng.Uint32())
		f := withOptions(udp4(netip.AddrFrom4(src), podB.ip, uint8(2+rng.IntN(254))), rng.IntN(11))
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

func benchObjects(b *testing.B, cfg Config) *Objects {
	objs := mustLoad(b, "")
	for _, e := range []fixtureEndpoint{podA, podB} {
		if err := objs.PutEndpoint(e.ip, e.ep); err != nil {
			b.Fatal(err)
		}
	}
	if err := objs.PutRemote(remoteBlock, remoteNode); err != nil {
		b.Fatal(err)
	}
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

func patch(f []byte, off int, v byte) []byte {
	f[off] = v
	return f
}

func ipv6Frame() []byte {
	f := make([]byte, 14+40+8)
	copy(f[0:6], podA.ep.HostMAC)
	copy(f[6:12], podA.ep.PodMAC)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	f[14] = 0x60
	binary.BigEndian.PutUint16(f[18:], 8)
	f[20], f[21] = 17, 64
	src, dst := netip.MustParseAddr("fd00::a").As16(), netip.MustParseAddr("fd00::14").As16()
	copy(f[22:], src[:])
	copy(f[38:], dst[:])
	return f
}

func arpFrame() []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], podA.ep.PodMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	copy(f[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	return f
}
