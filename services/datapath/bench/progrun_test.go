package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
)

// progBench is one BPF_PROG_TEST_RUN benchmark: the kernel's time per
// program run, median over the runs.
type progBench struct {
	Name    string
	NsPerOp float64
	Runs    []float64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// runProgBenchmarks runs bpf/datapath's benchmarks count times.
func runProgBenchmarks(root string, count int) ([]progBench, string, error) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-count", strconv.Itoa(count), "./datapath/"}
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join(root, "bpf")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	byName := map[string]*progBench{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		b := byName[m[1]]
		if b == nil {
			b = &progBench{Name: m[1]}
			byName[m[1]] = b
			order = append(order, m[1])
		}
		b.Runs = append(b.Runs, v)
	}
	var res []progBench
	for _, n := range order {
		b := byName[n]
		b.NsPerOp = medianF(b.Runs)
		res = append(res, *b)
	}
	if len(res) == 0 {
		return nil, "", fmt.Errorf("no benchmark results in:\n%s", out)
	}
	return res, "cd bpf && go " + strings.Join(args, " "), nil
}

// testRunCtx runs prog with BPF_PROG_TEST_RUN on frame repeat times with
// __sk_buff.ingress_ifindex set, which cilium/ebpf's Benchmark cannot
// pass, and returns the kernel's mean time per run.
func testRunCtx(prog *ebpf.Program, frame []byte, ingressIfindex uint32, repeat uint32) (uint32, time.Duration, error) {
	// struct __sk_buff up to and including ifindex; test-run accepts a
	// shorter context and zero-fills the rest.
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[36:], ingressIfindex) // ingress_ifindex
	binary.NativeEndian.PutUint32(ctx[40:], ingressIfindex) // ifindex: the skb's device
	out := make([]byte, len(frame)+256)
	attr := struct {
		progFD      uint32
		retval      uint32
		dataSizeIn  uint32
		dataSizeOut uint32
		dataIn      uint64
		dataOut     uint64
		repeat      uint32
		duration    uint32
		ctxSizeIn   uint32
		ctxSizeOut  uint32
		ctxIn       uint64
		ctxOut      uint64
		flags       uint32
		cpu         uint32
		batchSize   uint32
		_           uint32
	}{
		progFD: uint32(prog.FD()), dataSizeIn: uint32(len(frame)), dataSizeOut: uint32(len(out)),
		dataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), dataOut: uint64(uintptr(unsafe.Pointer(&out[0]))),
		repeat: repeat, ctxSizeIn: uint32(len(ctx)), ctxIn: uint64(uintptr(unsafe.Pointer(&ctx[0]))),
	}
	const bpfProgTestRun = 10
	var errno unix.Errno
	for {
		// The Go runtime's preemption signals interrupt long runs: retry.
		if _, _, errno = unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr)); errno != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(frame)
	runtime.KeepAlive(out)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
	}
	return attr.retval, time.Duration(attr.duration), nil
}

// nativePathCost measures axon_from_pod's native-mode path (FIB lookup and
// redirect_neigh), which bpf/datapath has no benchmark for: its test
// namespace has no routes, so the lookup misses. Here a namespace gets an
// ingress veth, an underlay veth with a route for a remote pod block and a
// permanent neighbour for its next hop, so the lookup succeeds. The empty
// program is run the same way for the floor.
func nativePathCost(rounds int) (floor, native float64, err error) {
	n, err := newNS()
	if err != nil {
		return 0, 0, err
	}
	defer n.close()
	if err := n.sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return 0, 0, err
	}
	var ingress, uplink netlink.Link
	for _, v := range []struct{ name, peer string }{{"lxcbench", "podbench"}, {"eth0", "eth0peer"}} {
		if err := n.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: v.peer}); err != nil {
			return 0, 0, err
		}
		for _, name := range []string{v.name, v.peer} {
			l, err := n.nl.LinkByName(name)
			if err == nil {
				err = n.nl.LinkSetUp(l)
			}
			if err != nil {
				return 0, 0, err
			}
		}
	}
	if ingress, err = n.nl.LinkByName("lxcbench"); err != nil {
		return 0, 0, err
	}
	if uplink, err = n.nl.LinkByName("eth0"); err != nil {
		return 0, 0, err
	}
	nodeIP, nextHop := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	block := netip.MustParsePrefix("10.244.2.0/24")
	src, dst := netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.2.30")
	if err := n.nl.AddrAdd(uplink, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		return 0, 0, err
	}
	if err := n.nl.NeighSet(&netlink.Neigh{LinkIndex: uplink.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: nextHop.AsSlice(), HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x22}}); err != nil {
		return 0, 0, err
	}
	if err := n.nl.RouteReplace(&netlink.Route{Dst: prefixNet(block), Gw: nextHop.AsSlice(), LinkIndex: uplink.Attrs().Index}); err != nil {
		return 0, 0, err
	}

	objs, err := bpfdp.Load("", bpfdp.LoadOptions{})
	if err != nil {
		return 0, 0, err
	}
	defer objs.Close()
	if err := objs.PutRemote(block, nextHop); err != nil {
		return 0, 0, err
	}
	if err := objs.SetConfig(bpfdp.Config{Mode: bpfdp.ModeNative, NodeIP: nodeIP}); err != nil {
		return 0, 0, err
	}
	hostMAC, podMAC := ingress.Attrs().HardwareAddr, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	// The sending pod: its own address on its own veth (the source check).
	if err := objs.PutEndpoint(src, bpfdp.Endpoint{Ifindex: ingress.Attrs().Index, ID: 1, PodMAC: podMAC, HostMAC: hostMAC}); err != nil {
		return 0, 0, err
	}
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return 0, 0, err
	}
	defer empty.Close()

	frame := udpFrame(hostMAC, podMAC, src, dst, 255)
	var floors, natives []float64
	err = n.do(func() error {
		for range rounds {
			for _, p := range []struct {
				prog *ebpf.Program
				want uint32
				out  *[]float64
			}{{empty, 0xFFFFFFFF, &floors}, {objs.FromPod(), 7, &natives}} {
				// 200 runs per call: the skb is reused and the TTL drops
				// by one per run (see bpf/datapath's benchmarks).
				var total time.Duration
				const calls, batch = 500, 200
				for range calls {
					ret, per, err := testRunCtx(p.prog, frame, uint32(ingress.Attrs().Index), batch)
					if err != nil {
						return err
					}
					if ret != p.want {
						return fmt.Errorf("verdict %d, want %d", int32(ret), int32(p.want))
					}
					total += per
				}
				*p.out = append(*p.out, float64(total)/calls)
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	s, err := objs.Stats()
	if err == nil && s.Map()["forwarded-native"] == 0 {
		err = fmt.Errorf("native path not taken: %v", s.Map())
	}
	return medianF(floors), medianF(natives), err
}

// udpFrame is Ethernet + IPv4 + UDP as a pod's host-side veth receives it.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, ttl uint8) []byte {
	payload := []byte("axon datapath bench")
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8], ip[9] = ttl, 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 7777)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}
