package probe

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/axon-cni/axon/bpf/internal/fdleak"
	"github.com/axon-cni/axon/bpf/testenv"
)

// TestMain fails the package if the tests leak file descriptors.
func TestMain(m *testing.M) { os.Exit(fdleak.Run(m)) }

// TestSpec checks the embedded object without privileges.
func TestSpec(t *testing.T) {
	spec, err := loadProbe()
	if err != nil {
		t.Fatal(err)
	}

	prog := spec.Programs[probeProgAxonProbe]
	if prog == nil {
		t.Fatalf("program %q missing; have %v", probeProgAxonProbe, keys(spec.Programs))
	}
	if prog.Type != ebpf.SchedCLS {
		t.Errorf("program type = %v, want %v", prog.Type, ebpf.SchedCLS)
	}
	if prog.License != "Dual MIT/GPL" {
		t.Errorf("license = %q, want %q", prog.License, "Dual MIT/GPL")
	}

	m := spec.Maps[probeMapCounters]
	if m == nil {
		t.Fatalf("map %q missing; have %v", probeMapCounters, keys(spec.Maps))
	}
	if m.Type != ebpf.PerCPUArray || m.KeySize != 4 || m.ValueSize != 16 || m.MaxEntries != 2 {
		t.Errorf("map = %v key %d value %d entries %d, want PerCPUArray key 4 value 16 entries 2",
			m.Type, m.KeySize, m.ValueSize, m.MaxEntries)
	}

	v := spec.Variables[probeVarDirection]
	if v == nil {
		t.Fatalf("variable %q missing", probeVarDirection)
	}
	if !v.Constant() || v.Size() != 4 {
		t.Errorf("direction: constant %v size %d, want constant of size 4", v.Constant(), v.Size())
	}
	var dir uint32
	if err := v.Get(&dir); err != nil {
		t.Fatal(err)
	}
	if Direction(dir) != Ingress {
		t.Errorf("default direction = %v, want %v", Direction(dir), Ingress)
	}
}

func TestLoadInvalidDirection(t *testing.T) {
	_, err := Load(Direction(7), nil)
	if !errors.Is(err, ErrInvalidDirection) {
		t.Fatalf("Load(7) error = %v, want ErrInvalidDirection", err)
	}
}

// TestObjectReproducible guards the generate-drift check: the committed
// object must not contain paths of the machine that built it.
func TestObjectReproducible(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(wd) // the bpf module, which holds src/ and include/
	if bytes.Contains(_ProbeBytes, []byte(root)) {
		t.Errorf("probe_bpfel.o contains the build path %q", root)
	}
}

const (
	// Fixed names and addresses are safe: they exist only inside the two
	// private namespaces each test creates.
	vethA = "axprobe-a"
	vethB = "axprobe-b"
)

var (
	addrA = net.IPv4(169, 254, 77, 1)
	addrB = net.IPv4(169, 254, 77, 2)
)

// TestProbeCounts attaches an ingress probe to one end of a veth pair and an
// egress probe to the other, sends UDP datagrams across, and checks that
// they all arrive (the probes do not change forwarding) and were counted on
// the right hook.
func TestProbeCounts(t *testing.T) {
	testenv.RequireBPF(t)
	p := newVethPair(t)

	ingress := mustLoad(t, Ingress)
	egress := mustLoad(t, Egress)
	attach(t, ingress, p.nsB, p.ifB)
	attach(t, egress, p.nsA, p.ifA)

	const (
		datagrams = 5
		payload   = 100
		// Ethernet + IPv4 + UDP headers around each payload.
		frame = 14 + 20 + 8 + payload
	)
	received := sendUDP(t, p, datagrams, payload)
	if received != datagrams {
		t.Fatalf("received %d of %d datagrams: the probes changed forwarding", received, datagrams)
	}

	for _, tc := range []struct {
		probe *Probe
		where string
	}{
		{ingress, vethB + " ingress"},
		{egress, vethA + " egress"},
	} {
		c, err := tc.probe.Counters()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d packets, %d bytes", tc.where, c.Packets, c.Bytes)
		// The hooks also see ARP and IPv6 neighbour discovery, so the
		// datagrams give lower bounds only.
		if c.Packets < datagrams {
			t.Errorf("%s: %d packets, want >= %d", tc.where, c.Packets, datagrams)
		}
		if c.Bytes < datagrams*frame {
			t.Errorf("%s: %d bytes, want >= %d", tc.where, c.Bytes, datagrams*frame)
		}
		// Every frame is at least an ARP frame (42 bytes) and at most an
		// MTU-sized one.
		if c.Bytes < 42*c.Packets || c.Bytes > 1514*c.Packets {
			t.Errorf("%s: %d bytes for %d packets is not a plausible frame size", tc.where, c.Bytes, c.Packets)
		}
		// The load-time constant must steer all counts into one slot.
		other, err := tc.probe.read(1 - tc.probe.Direction())
		if err != nil {
			t.Fatal(err)
		}
		if other != (Counters{}) {
			t.Errorf("%s: slot %v counted %+v, want nothing", tc.where, 1-tc.probe.Direction(), other)
		}
	}
}

func mustLoad(t *testing.T, dir Direction) *Probe {
	t.Helper()
	p, err := Load(dir, nil)
	testenv.RequireLoaded(t, "the probe", err)
	t.Cleanup(func() { p.Close() })
	return p
}

// attach attaches the probe to ifindex in ns; the index is resolved in the
// namespace of the attaching thread.
func attach(t *testing.T, p *Probe, ns netns.NsHandle, ifindex int) {
	t.Helper()
	var l link.Link
	err := inNetNS(ns, func() (err error) {
		l, err = p.Attach(ifindex)
		return err
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		testenv.RequireKernel(t, "tcx", 6, 6, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != ifindex {
		t.Fatalf("link info %+v, want tcx on ifindex %d", tcx, ifindex)
	}
}

type vethPair struct {
	nsA, nsB netns.NsHandle
	ifA, ifB int
}

// newVethPair creates two anonymous network namespaces joined by a veth
// pair. Anonymous namespaces live only as long as their handles and sockets,
// so nothing outlives the test process, even when it is killed.
func newVethPair(t *testing.T) *vethPair {
	t.Helper()
	var p vethPair
	var err error
	if p.nsA, err = newNetNS(); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { p.nsA.Close() })
	if p.nsB, err = newNetNS(); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { p.nsB.Close() })

	hA := netlinkHandle(t, p.nsA)
	hB := netlinkHandle(t, p.nsB)

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: vethA},
		PeerName:      vethB,
		PeerNamespace: netlink.NsFd(p.nsB),
	}
	if err := hA.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() { hA.LinkDel(veth) })

	p.ifA = configure(t, hA, vethA, addrA)
	p.ifB = configure(t, hB, vethB, addrB)
	return &p
}

func netlinkHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// configure gives the link addr/30, brings it up and returns its index.
func configure(t *testing.T, h *netlink.Handle, name string, addr net.IP) int {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	ipnet := &net.IPNet{IP: addr, Mask: net.CIDRMask(30, 32)}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipnet}); err != nil {
		t.Fatalf("add %s to %s: %v", ipnet, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
	return l.Attrs().Index
}

// sendUDP sends n datagrams of size bytes from namespace A to B and returns
// how many arrived. A datagram lost while ARP resolves is sent again.
func sendUDP(t *testing.T, p *vethPair, n, size int) int {
	t.Helper()
	var rx, tx *net.UDPConn
	// A socket stays in the namespace it was created in.
	if err := inNetNS(p.nsB, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: addrB})
		return err
	}); err != nil {
		t.Fatalf("listen in B: %v", err)
	}
	defer rx.Close()
	if err := inNetNS(p.nsA, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatalf("dial from A: %v", err)
	}
	defer tx.Close()

	msg := make([]byte, size)
	buf := make([]byte, size+1)
	received := 0
	for i := 0; i < n; i++ {
		for attempt := 0; ; attempt++ {
			if attempt == 3 {
				return received
			}
			msg[0] = byte(i)
			if _, err := tx.Write(msg); err != nil {
				t.Fatalf("send: %v", err)
			}
			if err := rx.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			got, err := rx.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if got != size || buf[0] != byte(i) {
				t.Fatalf("received %d bytes starting %d, want %d starting %d", got, buf[0], size, i)
			}
			received++
			break
		}
	}
	return received
}

// newNetNS creates an anonymous network namespace. The thread that creates
// it is left in it and never unlocked, so the runtime discards that thread.
func newNetNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

// inNetNS runs fn on a fresh OS thread switched into ns. The thread is
// never unlocked, so it is discarded when fn returns instead of returning
// to the scheduler in the wrong namespace.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func keys[V any](m map[string]V) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}
