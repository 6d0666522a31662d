package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestMain fails the package if the tests leak file descriptors (BPF
// objects, links, namespaces, netlink sockets).
func TestMain(m *testing.M) {
	// The runtime opens its netpoller (epoll + eventfd) on first use; open it
	// now so it does not count as a leak.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd leak check:", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fd leak check:", err)
		os.Exit(1)
	}
	var leaked []string
	for fd, target := range after {
		if _, ok := before[fd]; !ok {
			leaked = append(leaked, fmt.Sprintf("%d -> %s", fd, target))
		}
	}
	if len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "leaked %d file descriptors:\n  %s\n", len(leaked), strings.Join(leaked, "\n  "))
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func openFDs() (map[int]string, error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == int(f.Fd()) {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue
		}
		fds[fd] = target
	}
	return fds, nil
}

// TestSpec checks the embedded object without privileges: programs, maps
// and the shared layout the agent depends on.
func TestSpec(t *testing.T) {
	spec, err := loadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{datapathProgAxonFromPod, datapathProgAxonFromOverlay, datapathProgAxonToOverlay} {
		p := spec.Programs[name]
		if p == nil {
			t.Fatalf("program %q missing; have %v", name, keys(spec.Programs))
		}
		if p.Type != ebpf.SchedCLS {
			t.Errorf("%s: type %v, want %v", name, p.Type, ebpf.SchedCLS)
		}
		if p.License != "Dual MIT/GPL" {
			t.Errorf("%s: license %q, want %q", name, p.License, "Dual MIT/GPL")
		}
	}
	if len(spec.Programs) != 3 {
		t.Errorf("programs %v, want exactly 3", keys(spec.Programs))
	}

	for _, want := range []struct {
		name                   string
		typ                    ebpf.MapType
		key, value, max, flags uint32
	}{
		{datapathMapAxonEndpoints, ebpf.Hash, 4, 28, 65536, 0},
		{datapathMapAxonRemote4, ebpf.LPMTrie, 8, 8, 16384, unix.BPF_F_NO_PREALLOC},
		{datapathMapAxonConfig, ebpf.Array, 4, 16, 1, 0},
		{datapathMapAxonStats, ebpf.PerCPUArray, 4, 8, uint32(datapathAxonStatAXON_STAT_MAX), 0},
	} {
		m := spec.Maps[want.name]
		if m == nil {
			t.Errorf("map %q missing; have %v", want.name, keys(spec.Maps))
			continue
		}
		if m.Type != want.typ || m.KeySize != want.key || m.ValueSize != want.value ||
			m.MaxEntries != want.max || m.Flags != want.flags {
			t.Errorf("map %s = %v key %d value %d max %d flags %#x, want %v key %d value %d max %d flags %#x",
				want.name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags,
				want.typ, want.key, want.value, want.max, want.flags)
		}
		if m.Pinning != ebpf.PinByName {
			t.Errorf("map %s pinning %v, want PinByName", want.name, m.Pinning)
		}
	}
	if len(spec.Maps) != 4 {
		t.Errorf("maps %v, want exactly 4 (no .bss/.data/.rodata)", keys(spec.Maps))
	}
}

// TestStatFields checks that Stats covers every counter of enum axon_stat
// exactly once.
func TestStatFields(t *testing.T) {
	if len(statFields) != int(datapathAxonStatAXON_STAT_MAX) {
		t.Fatalf("%d stat fields, want %d", len(statFields), datapathAxonStatAXON_STAT_MAX)
	}
	names := map[string]bool{}
	var s Stats
	for i, f := range statFields {
		if f.stat != datapathAxonStat(i) {
			t.Errorf("statFields[%d] is counter %d", i, f.stat)
		}
		if names[f.name] {
			t.Errorf("duplicate name %q", f.name)
		}
		names[f.name] = true
		*f.field(&s) = uint64(i + 1)
	}
	n := len(statFields)
	if s.Total() != uint64(n*(n+1)/2) {
		t.Errorf("fields alias each other: total %d", s.Total())
	}
	if m := s.Map(); len(m) != n || m["forwarded-local"] != 1 || m["unconfigured"] != uint64(n) {
		t.Errorf("Map() = %v", m)
	}
}

func TestObjectReproducible(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if root := filepath.Dir(wd); bytes.Contains(_DatapathBytes, []byte(root)) {
		t.Errorf("datapath_bpfel.o contains the build path %q", root)
	}
}

// TestConversions checks the Go-to-map conversions without the kernel.
func TestConversions(t *testing.T) {
	k, err := endpointKey(netip.MustParseAddr("10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	// Network order: the bytes in memory are 10, 1, 2, 3 whatever the host.
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], k.Ip4)
	if b != [4]byte{10, 1, 2, 3} {
		t.Errorf("key bytes %v, want network order", b)
	}
	if got := addr4(k.Ip4); got != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("round trip %s", got)
	}
	if k2, err := endpointKey(netip.MustParseAddr("::ffff:10.1.2.3")); err != nil || k2 != k {
		t.Errorf("IPv4-mapped: %v %v", k2, err)
	}

	rk, err := remoteKey(netip.MustParsePrefix("10.244.7.9/24"))
	if err != nil {
		t.Fatal(err)
	}
	if rk.Prefixlen != 24 || addr4(rk.Ip4) != netip.MustParseAddr("10.244.7.0") {
		t.Errorf("remote key %+v, want 10.244.7.0/24 masked", rk)
	}

	for _, tc := range []struct {
		name string
		err  error
		fn   func() error
	}{
		{"v6 endpoint", ErrIPv6Unsupported, func() error { _, err := endpointKey(netip.MustParseAddr("fd00::1")); return err }},
		{"zero endpoint", ErrInvalidAddress, func() error { _, err := endpointKey(netip.Addr{}); return err }},
		{"0.0.0.0", ErrInvalidAddress, func() error { _, err := endpointKey(netip.MustParseAddr("0.0.0.0")); return err }},
		{"multicast", ErrInvalidAddress, func() error { _, err := endpointKey(netip.MustParseAddr("224.0.0.1")); return err }},
		{"v6 prefix", ErrIPv6Unsupported, func() error { _, err := remoteKey(netip.MustParsePrefix("fd00::/64")); return err }},
		{"zero prefix", ErrInvalidPrefix, func() error { _, err := remoteKey(netip.Prefix{}); return err }},
		{"short mapped prefix", ErrInvalidPrefix, func() error { _, err := remoteKey(netip.MustParsePrefix("::ffff:0.0.0.0/80")); return err }},
		{"short MAC", ErrInvalidMAC, func() error { _, err := mac(net.HardwareAddr{1, 2, 3}, "pod MAC"); return err }},
		{"ifindex 0", ErrInvalidIfindex, func() error { _, err := ifindex(0); return err }},
	} {
		if err := tc.fn(); !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
	}
	if rk, err := remoteKey(netip.MustParsePrefix("::ffff:10.0.0.0/104")); err != nil || rk.Prefixlen != 8 {
		t.Errorf("mapped prefix: %+v %v", rk, err)
	}
}

// TestInvalidInput checks that the helpers refuse bad input before touching
// the maps.
func TestInvalidInput(t *testing.T) {
	o := mustLoad(t, "")
	good := Endpoint{Ifindex: 5, PodMAC: mustMAC("02:00:00:00:00:01"), HostMAC: mustMAC("02:00:00:00:00:02")}
	ip := netip.MustParseAddr("10.0.0.5")
	for _, tc := range []struct {
		name string
		err  error
		fn   func() error
	}{
		{"v6 endpoint", ErrIPv6Unsupported, func() error { return o.PutEndpoint(netip.MustParseAddr("fd00::5"), good) }},
		{"no ifindex", ErrInvalidIfindex, func() error { e := good; e.Ifindex = 0; return o.PutEndpoint(ip, e) }},
		{"no pod MAC", ErrInvalidMAC, func() error { e := good; e.PodMAC = nil; return o.PutEndpoint(ip, e) }},
		{"v6 remote", ErrIPv6Unsupported, func() error { return o.PutRemote(netip.MustParsePrefix("fd00::/64"), ip) }},
		{"v6 remote node", ErrIPv6Unsupported, func() error {
			return o.PutRemote(netip.MustParsePrefix("10.1.0.0/24"), netip.MustParseAddr("fd00::1"))
		}},
		{"delete v6", ErrIPv6Unsupported, func() error { return o.DeleteEndpoint(netip.MustParseAddr("fd00::5")) }},
		{"bad mode", ErrInvalidMode, func() error { return o.SetConfig(Config{Mode: 9}) }},
		{"tunnel without device", ErrInvalidIfindex, func() error { return o.SetConfig(Config{Mode: ModeTunnel}) }},
		{"v6 node IP", ErrIPv6Unsupported, func() error {
			return o.SetConfig(Config{Mode: ModeNative, NodeIP: netip.MustParseAddr("fd00::1")})
		}},
	} {
		if err := tc.fn(); !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
	}
	if eps, err := o.Endpoints(); err != nil || len(eps) != 0 {
		t.Errorf("endpoints after bad input: %v %v", eps, err)
	}
	if _, err := o.Endpoint(ip); !errors.Is(err, ErrNotFound) {
		t.Errorf("Endpoint(missing) error %v, want ErrNotFound", err)
	}
	if err := o.DeleteEndpoint(ip); err != nil {
		t.Errorf("DeleteEndpoint(missing) = %v, want nil (idempotent)", err)
	}
	if err := o.DeleteRemote(netip.MustParsePrefix("10.9.0.0/16")); err != nil {
		t.Errorf("DeleteRemote(missing) = %v, want nil (idempotent)", err)
	}
}

// TestMapsRoundTrip writes every map through the helpers and reads it back.
func TestMapsRoundTrip(t *testing.T) {
	o := mustLoad(t, "")
	ip := netip.MustParseAddr("10.244.1.7")
	ep := Endpoint{Ifindex: 42, ID: 7, PodMAC: mustMAC("02:aa:bb:cc:dd:01"), HostMAC: mustMAC("02:aa:bb:cc:dd:02"), Identity: 1234}
	if err := o.PutEndpoint(ip, ep); err != nil {
		t.Fatal(err)
	}
	got, err := o.Endpoint(ip)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != ep.String() {
		t.Errorf("Endpoint = %v, want %v", got, ep)
	}
	eps, err := o.Endpoints()
	if err != nil || len(eps) != 1 || eps[ip].String() != ep.String() {
		t.Errorf("Endpoints = %v %v", eps, err)
	}

	prefix := netip.MustParsePrefix("10.244.2.0/24")
	node := netip.MustParseAddr("192.0.2.2")
	if err := o.PutRemote(prefix, node); err != nil {
		t.Fatal(err)
	}
	if rs, err := o.Remotes(); err != nil || len(rs) != 1 || rs[prefix] != node {
		t.Errorf("Remotes = %v %v", rs, err)
	}

	cfg := Config{Mode: ModeTunnel, VXLANIfindex: 3, NodeIP: netip.MustParseAddr("192.0.2.1")}
	if err := o.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if got, err := o.Config(); err != nil || got != cfg {
		t.Errorf("Config = %+v %v, want %+v", got, err, cfg)
	}

	if err := o.DeleteEndpoint(ip); err != nil {
		t.Fatal(err)
	}
	if err := o.DeleteRemote(prefix); err != nil {
		t.Fatal(err)
	}
	if eps, _ := o.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints after delete: %v", eps)
	}
	if rs, _ := o.Remotes(); len(rs) != 0 {
		t.Errorf("remotes after delete: %v", rs)
	}
}

func (e Endpoint) String() string {
	return fmt.Sprintf("{if %d id %d pod %s host %s identity %d}", e.Ifindex, e.ID, e.PodMAC, e.HostMAC, e.Identity)
}

// TestLoadPinned checks that a second Load with the same pin directory
// shares the maps, and that the pins outlive the loader (an agent restart).
func TestLoadPinned(t *testing.T) {
	requireBPF(t)
	dir := pinDir(t)

	a := mustLoad(t, dir)
	b := mustLoad(t, dir)
	for _, pair := range [][2]*ebpf.Map{
		{a.objs.AxonEndpoints, b.objs.AxonEndpoints},
		{a.objs.AxonRemote4, b.objs.AxonRemote4},
		{a.objs.AxonConfig, b.objs.AxonConfig},
		{a.objs.AxonStats, b.objs.AxonStats},
	} {
		ia, err := pair[0].Info()
		if err != nil {
			t.Fatal(err)
		}
		ib, err := pair[1].Info()
		if err != nil {
			t.Fatal(err)
		}
		ida, _ := ia.ID()
		idb, _ := ib.ID()
		if ida != idb {
			t.Errorf("map %s: ids %d and %d, want the same map", ia.Name, ida, idb)
		}
		if _, err := os.Stat(filepath.Join(dir, ia.Name)); err != nil {
			t.Errorf("pin of %s: %v", ia.Name, err)
		}
	}

	ip := netip.MustParseAddr("10.244.1.9")
	ep := Endpoint{Ifindex: 9, PodMAC: mustMAC("02:00:00:00:01:01"), HostMAC: mustMAC("02:00:00:00:01:02")}
	if err := a.PutEndpoint(ip, ep); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Endpoint(ip); err != nil || got.String() != ep.String() {
		t.Fatalf("second loader sees %v, %v", got, err)
	}
	a.Close()
	b.Close()

	c := mustLoad(t, dir)
	if got, err := c.Endpoint(ip); err != nil || got.String() != ep.String() {
		t.Fatalf("after a restart: %v, %v", got, err)
	}
}

// pinDir returns a fresh directory on bpffs, removed when the test ends.
func pinDir(t testing.TB) string {
	t.Helper()
	const root = "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Skipf("no bpffs: %v", err)
		}
		if err := unix.Mount("bpf", root, "bpf", 0, ""); err != nil {
			t.Skipf("no bpffs at %s and cannot mount it: %v", root, err)
		}
	}
	dir, err := os.MkdirTemp(root, "axon-datapath-test-")
	if err != nil {
		t.Skipf("cannot create a pin directory on bpffs: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// requireBPF skips the test where it cannot load BPF tc programs.
func requireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("remove memlock rlimit: %v", err)
	}
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
			t.Skipf("BPF tc programs unavailable: %v", err)
		}
		t.Fatalf("probe BPF tc programs: %v", err)
	}
}

// mustLoad loads the datapath (pinned under dir unless it is empty) and
// closes it when the test ends.
func mustLoad(t testing.TB, dir string) *Objects {
	t.Helper()
	requireBPF(t)
	o, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
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
// never unlocked, so it is discarded when fn returns.
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

// TestVerifier loads the programs and logs their size as the verifier saw
// it, to keep an eye on complexity.
func TestVerifier(t *testing.T) {
	o := mustLoad(t, "")
	for name, p := range map[string]*ebpf.Program{"axon_from_pod": o.FromPod(), "axon_from_overlay": o.FromOverlay()} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, _ := info.Instructions()
		verified, _ := info.VerifiedInstructions()
		t.Logf("%s: %d instructions, %d verified", name, len(insns), verified)
	}
}
