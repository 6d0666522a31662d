package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// This build's datapath objects, which the test loads against maps of an
// older layout to stand for an earlier build's node. Each declares all the
// maps the objects share.
const (
	podObject      = "../../../bpf/datapath/pod_bpfel.o"
	underlayObject = "../../../bpf/datapath/underlay_bpfel.o"
)

// Sizes of the earlier node's maps.
const (
	oldEndpointMax = 16
	oldRemoteMax   = 8
)

// upgradePod is a pod wired as the agent wires it (veth pair, /32, router
// route and neighbour), with its host-side veth in the node.
type upgradePod struct {
	ns      *nstest.NS
	ip      netip.Addr
	host    netlink.Link // lxc*, in the node
	podMAC  net.HardwareAddr
	hostIdx int
}

func addUpgradePod(t *testing.T, node *nstest.NS, hostName string, ip, router netip.Addr) *upgradePod {
	t.Helper()
	p := &upgradePod{ns: nstest.New(t), ip: ip}
	must(t, "add veth", node.Netlink.LinkAdd(&netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(p.ns.Handle),
	}))
	host, err := node.Netlink.LinkByName(hostName)
	must(t, "host veth", err)
	eth0, err := p.ns.Netlink.LinkByName("eth0")
	must(t, "pod eth0", err)
	p.host, p.hostIdx, p.podMAC = host, host.Attrs().Index, eth0.Attrs().HardwareAddr
	must(t, "host side up", node.Netlink.LinkSetUp(host))
	must(t, "eth0 up", p.ns.Netlink.LinkSetUp(eth0))
	must(t, "pod address", p.ns.Netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, "router route", p.ns.Netlink.RouteAdd(&netlink.Route{
		LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK,
	}))
	must(t, "default route", p.ns.Netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: router.AsSlice()}))
	must(t, "router neighbour", p.ns.Netlink.NeighAdd(&netlink.Neigh{
		LinkIndex: eth0.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: router.AsSlice(), HardwareAddr: host.Attrs().HardwareAddr,
	}))
	return p
}

// oldEndpoint is an axon_endpoint of the layout before flags: 24 bytes.
func (p *upgradePod) oldEndpoint() []byte {
	v := make([]byte, 24)
	binary.NativeEndian.PutUint32(v[0:], uint32(p.hostIdx))
	binary.NativeEndian.PutUint32(v[4:], uint32(p.hostIdx))
	copy(v[8:], p.podMAC)
	copy(v[14:], p.host.Attrs().HardwareAddr)
	return v
}

// startOldNode stands for a node of an earlier build: this build's
// programs loaded against pinned maps whose endpoint values lack their
// last member (flags) and whose sizes are small, the pods' host veths
// carrying the program as the loader's tc filter, the underlay device a
// pinned tcx link. The programs never read flags, so the verifier accepts
// the shorter values.
func startOldNode(t *testing.T, node *nstest.NS, dir, underlay string, pods ...*upgradePod) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(podObject)
	if err != nil {
		t.Fatalf("read the datapath pod object: %v", err)
	}
	underSpec, err := ebpf.LoadCollectionSpec(underlayObject)
	if err != nil {
		t.Fatalf("read the datapath underlay object: %v", err)
	}
	for _, s := range []*ebpf.CollectionSpec{spec, underSpec} {
		for name, ms := range s.Maps {
			olderMap(t, name, ms)
		}
	}
	maps := map[string]*ebpf.Map{}
	for name, ms := range spec.Maps {
		m, err := ebpf.NewMap(ms)
		if err != nil {
			t.Fatalf("create old %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		must(t, "pin old "+name, m.Pin(filepath.Join(dir, name)))
		maps[name] = m
	}
	programs := map[string]*ebpf.Program{}
	for _, s := range []*ebpf.CollectionSpec{spec, underSpec} {
		repl := map[string]*ebpf.Map{}
		for name := range s.Maps {
			repl[name] = maps[name]
		}
		coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			t.Fatalf("load this build's programs on the older maps: %v", err)
		}
		t.Cleanup(coll.Close)
		for name, p := range coll.Programs {
			programs[name] = p
		}
	}

	// Native routing: a pod-to-pod packet on this node never leaves it.
	cfg := make([]byte, 16)
	binary.NativeEndian.PutUint32(cfg, uint32(bpfdp.ModeNative))
	must(t, "old config", maps["axon_config"].Put(uint32(0), cfg))
	for _, p := range pods {
		must(t, "old endpoint", maps["axon_endpoints"].Put(p.ip.AsSlice(), p.oldEndpoint()))
		must(t, "old device", maps["axon_devices"].Put(uint32(p.hostIdx), uint32(p.hostIdx)))
		must(t, "clsact", node.Netlink.QdiscReplace(clsact(p.hostIdx)))
		must(t, "old filter", node.Netlink.FilterReplace(ingressFilter().filter(p.hostIdx, programs["axon_from_pod"])))
	}
	under := addVeth(t, node, underlay)
	must(t, "old underlay link", node.Do(func() error {
		ln, err := link.AttachTCX(link.TCXOptions{Interface: under, Program: programs["axon_from_underlay"], Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		defer ln.Close()
		return ln.Pin(filepath.Join(dir, "links", underlayIn))
	}))
}

// liveConn is a TCP connection from pod a to pod b that exchanges a
// message and its echo every few milliseconds until stopped.
type liveConn struct {
	rounds atomic.Int64
	stop   chan struct{}
	once   sync.Once
	done   chan struct{} // closed when the exchange ends, err set
	err    error
}

func startLiveConn(t *testing.T, a, b *upgradePod) *liveConn {
	t.Helper()
	var ln net.Listener
	must(t, "listen", b.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(b.ip.String(), "0"))
		return err
	}))
	var wg sync.WaitGroup
	// One cleanup, closing before waiting: were wg.Wait registered after
	// ln.Close, LIFO order would wait first, on an Accept that a failed
	// dial leaves blocked until the go test timeout.
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Plain reads and writes: io.Copy would splice through a pipe.
		_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4096))
	}()
	var c net.Conn
	must(t, "dial", a.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}))
	lc := &liveConn{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lc.done)
		defer c.Close()
		msg, echo := make([]byte, 1024), make([]byte, 1024)
		for i := 0; ; i++ {
			select {
			case <-lc.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for j := range msg {
				msg[j] = byte(i + j)
			}
			// A stall beyond the deadline or a reset fails the test: the
			// upgrade must not drop the connection.
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write(msg); err != nil {
				lc.err = fmt.Errorf("round %d: write: %w", i, err)
				return
			}
			if _, err := io.ReadFull(c, echo); err != nil {
				lc.err = fmt.Errorf("round %d: read echo: %w", i, err)
				return
			}
			if !bytes.Equal(msg, echo) {
				lc.err = fmt.Errorf("round %d: echo differs", i)
				return
			}
			lc.rounds.Add(1)
		}
	}()
	t.Cleanup(func() { _ = lc.close() })
	return lc
}

// waitRounds waits until the connection made n more round trips, or fails.
func (lc *liveConn) waitRounds(t *testing.T, n int64, what string) {
	t.Helper()
	want := lc.rounds.Load() + n
	testpoll.Until(t, 5*time.Second, func() error {
		select {
		case <-lc.done:
			// A failed connection makes no more round trips: fail now.
			t.Fatalf("%s: the connection failed: %v", what, lc.err)
		default:
		}
		if got := lc.rounds.Load() - want + n; got < n {
			return fmt.Errorf("%s: %d round trips, want %d", what, got, n)
		}
		return nil
	})
}

// close ends the exchange and returns why it ended early, if it did.
func (lc *liveConn) close() error {
	lc.once.Do(func() { close(lc.stop) })
	<-lc.done
	return lc.err
}

// TestUpgradeUnderLiveTCP upgrades a running node twice while two of its
// pods keep a TCP connection open and busy: from an earlier build whose
// endpoint values lack a member to this build, then to larger maps. After
// each upgrade the same connection goes on, the entries are in the new
// maps, the pins and every device's program use them.
func TestUpgradeUnderLiveTCP(t *testing.T) {
	testenv.RequireBPF(t) // lifts the memlock limit too
	node := nstest.New(t)
	dir := pinDir(t)
	must(t, "links dir", os.MkdirAll(filepath.Join(dir, "links"), 0o700))
	router := netip.MustParseAddr("10.244.1.1")
	a := addUpgradePod(t, node, "lxca", netip.MustParseAddr("10.244.1.10"), router)
	b := addUpgradePod(t, node, "lxcb", netip.MustParseAddr("10.244.1.20"), router)
	startOldNode(t, node, dir, "under0", a, b)

	conn := startLiveConn(t, a, b)
	conn.waitRounds(t, 20, "before the upgrades")
	var forwarded uint64 // forwarded-local so far

	for _, step := range []struct {
		name string
		opts bpfdp.LoadOptions
		// migrated are the maps that must be new ones after this step.
		migrated []string
	}{
		{"older value layout to this build's", bpfdp.LoadOptions{EndpointMapMax: oldEndpointMax, RemoteMapMax: oldRemoteMax},
			[]string{"axon_endpoints", "axon_endpoints6"}},
		{"small maps to larger ones", bpfdp.LoadOptions{EndpointMapMax: 4096, RemoteMapMax: 1024},
			[]string{"axon_endpoints", "axon_endpoints6", "axon_devices", "axon_remote4", "axon_remote6"}},
	} {
		before := pinnedMapIDs(t, dir)
		var l *Loader
		if err := node.Do(func() (err error) { l, err = Open(dir, step.opts); return err }); err != nil {
			t.Fatalf("%s: Open: %v", step.name, err)
		}
		conn.waitRounds(t, 20, step.name)
		// TCP retransmits would hide a packet lost in the swap; the
		// counters would not. axon_stats is never migrated here (it keeps
		// its size), so it holds every packet since the old node started:
		// all forwarded from pod to pod, none missing an entry (to-host,
		// fib-miss) or dropped (drop-*, drop-spoofed).
		forwarded = checkOnlyForwardedLocal(t, step.name, l, forwarded)

		after := pinnedMapIDs(t, dir)
		for name, id := range after {
			if _, existed := before[name]; !existed {
				continue // new in this build (the socket programs' maps): created
			}
			if migrated := id != before[name]; migrated != slices.Contains(step.migrated, name) {
				t.Errorf("%s: map %s migrated: %v", step.name, name, migrated)
			}
		}
		// The pods' and the underlay's programs are this loader's, and
		// use the pinned maps.
		for _, p := range []*upgradePod{a, b} {
			if problems := l.EndpointProgramProblems(p.host.Attrs().Name); len(problems) != 0 {
				t.Errorf("%s: %s: %v", step.name, p.ip, problems)
			}
			ep, err := l.Endpoint(p.ip)
			if err != nil || ep.Ifindex != p.hostIdx || ep.PodMAC.String() != p.podMAC.String() ||
				ep.HostMAC.String() != p.host.Attrs().HardwareAddr.String() {
				t.Errorf("%s: endpoint entry of %s = %+v, %v", step.name, p.ip, ep, err)
			}
		}
		checkProgramMaps(t, step.name, l.objs.FromPod(), after)
		if ln, ok := l.links[underlayIn]; !ok {
			t.Errorf("%s: underlay link not adopted", step.name)
		} else {
			checkLinkProgram(t, step.name, ln, l.objs.FromUnderlay())
		}
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, "axon_endpoints"), nil)
		must(t, "open pinned endpoints", err)
		if pinned.ValueSize() != 28 || pinned.MaxEntries() != step.opts.EndpointMapMax {
			t.Errorf("%s: pinned axon_endpoints has %d-byte values, %d entries max", step.name, pinned.ValueSize(), pinned.MaxEntries())
		}
		pinned.Close()
		// The agent stops; the node keeps forwarding on its own.
		must(t, "close loader", l.Close())
		conn.waitRounds(t, 10, step.name+", agent stopped")
	}
	if err := conn.close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d round trips over one connection", conn.rounds.Load())
}

// checkOnlyForwardedLocal checks that the datapath's counters hold only
// packets forwarded from pod to pod, more than before, and returns how
// many. non-ipv4 is ignored: the pods' IPv6 autoconfiguration sends
// multicast the programs leave to the kernel by design.
func checkOnlyForwardedLocal(t *testing.T, what string, l *Loader, before uint64) uint64 {
	t.Helper()
	st, err := l.objs.Stats()
	must(t, "read counters", err)
	for name, n := range st.Map() {
		// kernel-to-pod: what the node's stack sends into the pods
		// (axon_to_pod passes it).
		if n != 0 && name != "forwarded-local" && name != "non-ipv4" && name != "kernel-to-pod" {
			t.Errorf("%s: counter %s = %d, want 0 (a packet missed the maps or was dropped)", what, name, n)
		}
	}
	if st.ForwardedLocal <= before {
		t.Errorf("%s: forwarded-local = %d, was %d: the connection's packets did not go through the programs", what, st.ForwardedLocal, before)
	}
	return st.ForwardedLocal
}

// pinnedMapIDs returns the ID of each map pinned in dir, by name.
func pinnedMapIDs(t *testing.T, dir string) map[string]ebpf.MapID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, "read pin dir", err)
	ids := map[string]ebpf.MapID{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), nil)
		must(t, "open pin "+e.Name(), err)
		info, err := m.Info()
		m.Close()
		must(t, "map info", err)
		ids[e.Name()], _ = info.ID()
	}
	return ids
}

// checkProgramMaps checks that prog uses the pinned maps, among them all
// the endpoint maps.
func checkProgramMaps(t *testing.T, what string, prog *ebpf.Program, pinned map[string]ebpf.MapID) {
	t.Helper()
	info, err := prog.Info()
	must(t, "program info", err)
	used, ok := info.MapIDs()
	if !ok {
		t.Fatalf("%s: the kernel does not list a program's maps", what)
	}
	for _, name := range []string{"axon_endpoints", "axon_endpoints6", "axon_devices", "axon_remote4"} {
		if !slices.Contains(used, pinned[name]) {
			t.Errorf("%s: the pod program uses maps %v, not the pinned %s (%d)", what, used, name, pinned[name])
		}
	}
}

func checkLinkProgram(t *testing.T, what string, ln link.Link, prog *ebpf.Program) {
	t.Helper()
	li, err := ln.Info()
	must(t, "link info", err)
	pi, err := prog.Info()
	must(t, "program info", err)
	if id, _ := pi.ID(); li.Program != id {
		t.Errorf("%s: link runs program %d, want %d", what, li.Program, id)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// olderMap makes ms, this build's map name, what the earlier node had:
// endpoint values without their last member (flags), smaller sizes.
func olderMap(t *testing.T, name string, ms *ebpf.MapSpec) {
	t.Helper()
	ms.Pinning = ebpf.PinNone
	switch name {
	case "axon_endpoints", "axon_endpoints6":
		s := btf.Copy(ms.Value).(*btf.Struct)
		if last := s.Members[len(s.Members)-1]; last.Name != "flags" || last.Offset.Bytes() != 24 {
			t.Fatalf("axon_endpoint ends with %s at %d: update the test's older layout", last.Name, last.Offset.Bytes())
		}
		s.Members = s.Members[:len(s.Members)-1]
		s.Size = 24
		ms.Value, ms.ValueSize, ms.MaxEntries = s, s.Size, oldEndpointMax
	case "axon_devices":
		ms.MaxEntries = oldEndpointMax
	case "axon_remote4", "axon_remote6":
		ms.MaxEntries = oldRemoteMax
	}
}
