package datapath

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

var (
	upgradeIP4 = []netip.Addr{netip.MustParseAddr("10.244.1.9"), netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.11")}
	upgradeIP6 = netip.MustParseAddr("fd00:10:244:1::9")
	upgradeEP  = Endpoint{Ifindex: 9, ID: 5, PodMAC: mustMAC("02:00:00:00:01:01"), HostMAC: mustMAC("02:00:00:00:01:02"), Identity: 7}
	upgradeBlk = []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:2::/64")}
	upgradeGW  = netip.MustParseAddr("192.168.1.2")
)

// nodePins pins a node's maps in a fresh directory, as a stopped agent
// that ran with opts left them: three IPv4 endpoints, one IPv6, a device,
// three remote blocks.
func nodePins(t *testing.T, opts LoadOptions) string {
	t.Helper()
	requireBPF(t)
	dir := pinDir(t)
	o, err := Load(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, ip := range append(slices.Clone(upgradeIP4), upgradeIP6) {
		must(t, "put endpoint", o.PutEndpoint(ip, upgradeEP))
	}
	must(t, "put device", o.PutDevice(9, 1))
	for _, b := range upgradeBlk {
		must(t, "put remote", o.PutRemote(b, upgradeGW))
	}
	must(t, "put service", o.PutServices([]ServiceEntry{upgradeSvc}))
	must(t, "put flow", o.maps.AxonCt.Put(upgradeFlow, podAxonCtEntry{ServiceId: upgradeSvc.Service.ID}))
	return dir
}

// A service and a flow of the node state nodePins writes.
var (
	upgradeSvc = ServiceEntry{Frontend: Frontend{Addr: netip.MustParseAddr("10.96.0.1"), Port: 443, Proto: 6},
		Service: Service{ID: 5, Active: []Backend{{Addr: netip.MustParseAddr("10.244.1.5"), Port: 6443, Local: true}}, Meta: []byte("kubernetes")}}
	upgradeFlow = podAxonCtKey{Sport: 40000, Dport: 443, Proto: 6}
)

// checkNodeState checks that o holds what nodePins put.
func checkNodeState(t *testing.T, o *Objects) {
	t.Helper()
	eps, err := o.Endpoints()
	if err != nil || len(eps) != 4 {
		t.Fatalf("endpoints after the upgrade: %v, %v", eps, err)
	}
	for ip, ep := range eps {
		if ep.String() != upgradeEP.String() {
			t.Errorf("endpoint %s = %v, want %v", ip, ep, upgradeEP)
		}
	}
	if pod, err := o.Device(9); err != nil || pod != 1 {
		t.Errorf("device 9 = %d, %v", pod, err)
	}
	rs, err := o.Remotes()
	if err != nil || len(rs) != len(upgradeBlk) {
		t.Fatalf("remotes after the upgrade: %v, %v", rs, err)
	}
	for _, b := range upgradeBlk {
		if rs[b] != upgradeGW {
			t.Errorf("remote %s = %s", b, rs[b])
		}
	}
	svcs, err := o.Services()
	if err != nil || len(svcs) != 1 || svcs[0].Frontend != upgradeSvc.Frontend || svcs[0].Service.ID != upgradeSvc.Service.ID ||
		!slices.Equal(svcs[0].Service.Active, upgradeSvc.Service.Active) || string(svcs[0].Service.Meta) != string(upgradeSvc.Service.Meta) {
		t.Errorf("services after the upgrade: %+v, %v", svcs, err)
	}
	var flow podAxonCtEntry
	if err := o.maps.AxonCt.Lookup(upgradeFlow, &flow); err != nil || flow.ServiceId != upgradeSvc.Service.ID {
		t.Errorf("flow after the upgrade: %+v, %v", flow, err)
	}
}

// buildMapSpec returns a copy of this build's spec of the map name.
func buildMapSpec(t *testing.T, name string) *ebpf.MapSpec {
	t.Helper()
	spec, err := loadPod()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[name].Copy()
	ms.Pinning = ebpf.PinNone
	return ms
}

// withoutMembers returns a copy of the struct t with the members named
// drop removed and its size cut to end at the last member kept, as an
// older build's layout.
func withoutMembers(t *testing.T, typ btf.Type, drop ...string) *btf.Struct {
	t.Helper()
	s := btf.Copy(typ).(*btf.Struct)
	s.Members = slices.DeleteFunc(s.Members, func(m btf.Member) bool { return slices.Contains(drop, m.Name) })
	last := s.Members[len(s.Members)-1]
	n, err := btf.Sizeof(last.Type)
	if err != nil {
		t.Fatal(err)
	}
	s.Size = last.Offset.Bytes() + uint32(n)
	return s
}

// pinOld replaces the pin of spec's map in dir with a new map of spec
// (another build's), filled by fill.
func pinOld(t *testing.T, dir string, spec *ebpf.MapSpec, fill func(*ebpf.Map) error) {
	t.Helper()
	path := filepath.Join(dir, spec.Name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatalf("create old %s: %v", spec.Name, err)
	}
	defer m.Close()
	if fill != nil {
		must(t, "fill old "+spec.Name, fill(m))
	}
	must(t, "pin old "+spec.Name, m.Pin(path))
}

// pinIDs returns the ID of every map pinned in dir, by name.
func pinIDs(t *testing.T, dir string) map[string]ebpf.MapID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]ebpf.MapID{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		ids[e.Name()] = mapID(t, filepath.Join(dir, e.Name()), nil)
	}
	return ids
}

// mapID returns the ID of the map pinned at path, or of m.
func mapID(t *testing.T, path string, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	if m == nil {
		pm, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pm.Close()
		m = pm
	}
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// oldEndpointValue is an axon_endpoint of the layout before flags.
func oldEndpointValue() []byte {
	v := make([]byte, 24)
	binary.NativeEndian.PutUint32(v[0:], uint32(upgradeEP.Ifindex))
	binary.NativeEndian.PutUint32(v[4:], upgradeEP.ID)
	copy(v[8:], upgradeEP.PodMAC)
	copy(v[14:], upgradeEP.HostMAC)
	binary.NativeEndian.PutUint32(v[20:], upgradeEP.Identity)
	return v
}

// TestLoadMigrates: each compatible change of a pinned map (size up or
// down, value members appended, counters added or dropped) moves the
// entries into a new map of this build's shape, and the pin to it.
func TestLoadMigrates(t *testing.T) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	perCPU := func(v uint64) []uint64 {
		s := make([]uint64, ncpu)
		s[0], s[ncpu-1] = v, v+1 // ncpu may be 1: then v+1 wins
		return s
	}
	sum := func(v uint64) uint64 {
		if ncpu == 1 {
			return v + 1
		}
		return 2*v + 1
	}
	statMax := uint32(podAxonStatAXON_STAT_MAX)
	for _, tc := range []struct {
		name  string
		pins  LoadOptions              // the node's earlier sizes
		old   func(*testing.T, string) // then replaces pins by an older build's
		opts  LoadOptions
		check func(*testing.T, *Objects)
		// migrated are the maps that must be new ones; the others are the
		// pinned maps, reused.
		migrated []string
	}{
		{name: "hash and LPM larger", pins: LoadOptions{EndpointMapMax: 16, RemoteMapMax: 4}, opts: LoadOptions{EndpointMapMax: 4096, RemoteMapMax: 1024},
			migrated: []string{podMapAxonEndpoints, podMapAxonEndpoints6, podMapAxonDevices, podMapAxonRemote4, podMapAxonRemote6},
			check: func(t *testing.T, o *Objects) {
				for _, m := range []*ebpf.Map{o.maps.AxonEndpoints, o.maps.AxonEndpoints6, o.maps.AxonDevices} {
					if m.MaxEntries() != 4096 {
						t.Errorf("%s: max_entries %d, want 4096", m, m.MaxEntries())
					}
				}
				if n := o.maps.AxonRemote6.MaxEntries(); n != 1024 {
					t.Errorf("axon_remote6: max_entries %d, want 1024", n)
				}
			}},
		{name: "service and tracker maps resized", pins: LoadOptions{ServiceMapMax: 16, SlotMapMax: 16, CTMapMax: 16},
			opts:     LoadOptions{ServiceMapMax: 4096, SlotMapMax: 8192, CTMapMax: 1 << 16},
			migrated: []string{podMapAxonLbServices, podMapAxonLbMeta, podMapAxonLbSlots, podMapAxonCt},
			check: func(t *testing.T, o *Objects) {
				if n := o.maps.AxonCt.MaxEntries(); n != 1<<16 {
					t.Errorf("axon_ct: max_entries %d, want %d", n, 1<<16)
				}
			}},
		{name: "hash and LPM smaller, entries fit", opts: LoadOptions{EndpointMapMax: 3, RemoteMapMax: 2},
			migrated: []string{podMapAxonEndpoints, podMapAxonEndpoints6, podMapAxonDevices, podMapAxonRemote4, podMapAxonRemote6},
			check: func(t *testing.T, o *Objects) {
				if n := o.maps.AxonEndpoints.MaxEntries(); n != 3 {
					t.Errorf("axon_endpoints: max_entries %d, want 3", n)
				}
			}},
		{name: "hash value appended", migrated: []string{podMapAxonEndpoints}, old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonEndpoints)
			spec.Value = withoutMembers(t, spec.Value, "flags")
			spec.ValueSize = 24
			pinOld(t, dir, spec, func(m *ebpf.Map) error {
				for _, ip := range upgradeIP4 {
					if err := m.Put(endpointKey4(ip), oldEndpointValue()); err != nil {
						return err
					}
				}
				return nil
			})
		}, check: func(t *testing.T, o *Objects) {
			var v podAxonEndpoint
			must(t, "lookup", o.maps.AxonEndpoints.Lookup(endpointKey4(upgradeIP4[0]), &v))
			if v.Flags != 0 || o.maps.AxonEndpoints.ValueSize() != 28 {
				t.Errorf("migrated value %+v of %d bytes", v, o.maps.AxonEndpoints.ValueSize())
			}
		}},
		{name: "array value appended", migrated: []string{podMapAxonConfig}, old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonConfig)
			spec.Value = withoutMembers(t, spec.Value, "flags")
			spec.ValueSize = 12
			pinOld(t, dir, spec, func(m *ebpf.Map) error {
				v := make([]byte, 12)
				binary.NativeEndian.PutUint32(v[0:], uint32(ModeTunnel))
				binary.NativeEndian.PutUint32(v[4:], 3)
				ip, _ := ip4(upgradeGW)
				binary.NativeEndian.PutUint32(v[8:], ip)
				return m.Put(uint32(0), v)
			})
		}, check: func(t *testing.T, o *Objects) {
			c, err := o.Config()
			if err != nil || c != (Config{Mode: ModeTunnel, VXLANIfindex: 3, NodeIP: upgradeGW}) {
				t.Errorf("config after the upgrade: %+v, %v", c, err)
			}
		}},
		{name: "per-CPU array with fewer counters", migrated: []string{podMapAxonStats}, old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonStats)
			spec.MaxEntries = statMax - 1
			pinOld(t, dir, spec, func(m *ebpf.Map) error {
				if err := m.Put(uint32(podAxonStatAXON_STAT_FWD_LOCAL), perCPU(5)); err != nil {
					return err
				}
				return m.Put(statMax-2, perCPU(9))
			})
		}, check: func(t *testing.T, o *Objects) {
			s, err := o.Stats()
			if err != nil || s.ForwardedLocal != sum(5) || s.Total() != sum(5)+sum(9) {
				t.Errorf("counters after the upgrade: %+v, %v", s, err)
			}
		}},
		{name: "per-CPU array with more counters", migrated: []string{podMapAxonStats}, old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonStats)
			spec.MaxEntries = statMax + 2
			pinOld(t, dir, spec, func(m *ebpf.Map) error {
				if err := m.Put(uint32(podAxonStatAXON_STAT_DROP_TTL), perCPU(3)); err != nil {
					return err
				}
				return m.Put(statMax+1, perCPU(4)) // a later build's counter: dropped
			})
		}, check: func(t *testing.T, o *Objects) {
			s, err := o.Stats()
			if err != nil || s.DropTTL != sum(3) || s.Total() != sum(3) {
				t.Errorf("counters after the downgrade: %+v, %v", s, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := nodePins(t, tc.pins)
			if tc.old != nil {
				tc.old(t, dir)
			}
			before := pinIDs(t, dir)
			o, err := Load(dir, tc.opts)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			t.Cleanup(func() { o.Close() })
			checkNodeState(t, o)
			tc.check(t, o)
			// Every pin names the map the programs use, and only migrated
			// maps are new ones.
			after := pinIDs(t, dir)
			if len(after) != len(before) {
				t.Errorf("pins %v after the upgrade, want the %d of before", keys(after), len(before))
			}
			for name, m := range o.mapsByName() {
				id := mapID(t, "", m)
				if after[name] != id {
					t.Errorf("pin %s is map %d, the programs use %d", name, after[name], id)
				}
				if migrated := before[name] != id; migrated != slices.Contains(tc.migrated, name) {
					t.Errorf("%s: migrated %v, want %v", name, migrated, !migrated)
				}
			}
		})
	}
}

// mapsByName returns the programs' maps by name.
func (o *Objects) mapsByName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		podMapAxonConfig: o.maps.AxonConfig, podMapAxonDevices: o.maps.AxonDevices,
		podMapAxonEndpoints: o.maps.AxonEndpoints, podMapAxonEndpoints6: o.maps.AxonEndpoints6,
		podMapAxonRemote4: o.maps.AxonRemote4, podMapAxonRemote6: o.maps.AxonRemote6,
		podMapAxonStats: o.maps.AxonStats, podMapAxonLbServices: o.maps.AxonLbServices,
		podMapAxonLbSlots: o.maps.AxonLbSlots, podMapAxonLbMeta: o.maps.AxonLbMeta,
		podMapAxonCt: o.maps.AxonCt,
	}
}

// TestLoadRefusesIncompatible: a pinned map that cannot become this
// build's without losing entries fails the load with the map's name and
// the reason, and every pin stays as it was, migrated ones too.
func TestLoadRefusesIncompatible(t *testing.T) {
	endpointValue := func(t *testing.T, edit func(*btf.Struct)) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonEndpoints)
			s := btf.Copy(spec.Value).(*btf.Struct)
			edit(s)
			spec.Value = s
			spec.ValueSize = s.Size
			pinOld(t, dir, spec, nil)
		}
	}
	for _, tc := range []struct {
		name    string
		old     func(*testing.T, string)
		opts    LoadOptions
		mapName string
		reason  string
	}{
		{name: "map type", old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonEndpoints)
			spec.Type = ebpf.LRUHash
			pinOld(t, dir, spec, nil)
		}, mapName: podMapAxonEndpoints, reason: "pinned map type LRUHash, this build's Hash"},
		{name: "key", old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonDevices)
			spec.Key = &btf.Int{Name: "__u64", Size: 8, Encoding: btf.Unsigned}
			spec.KeySize = 8
			pinOld(t, dir, spec, nil)
		}, mapName: podMapAxonDevices, reason: "pinned key layout (8 bytes: __u64@0:8) differs from this build's (4 bytes: __u32@0:4)"},
		{name: "value member reordered", old: endpointValue(t, func(s *btf.Struct) {
			s.Members[0].Name, s.Members[1].Name = s.Members[1].Name, s.Members[0].Name
		}), mapName: podMapAxonEndpoints, reason: "pinned value layout (28 bytes: id@0:4 ifindex@4:4"},
		{name: "value member removed", old: endpointValue(t, func(s *btf.Struct) {
			s.Members = slices.Delete(s.Members, 1, 2) // id
		}), mapName: podMapAxonEndpoints, reason: "is not a prefix of this build's (28 bytes: ifindex@0:4 id@4:4 pod_mac@8:6 host_mac@14:6 identity@20:4 flags@24:4)"},
		{name: "value member resized", old: endpointValue(t, func(s *btf.Struct) {
			s.Members[4].Type = &btf.Int{Name: "__u16", Size: 2, Encoding: btf.Unsigned} // identity
		}), mapName: podMapAxonEndpoints, reason: "identity@20:2"},
		{name: "scalar value grown", old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonDevices)
			spec.Value = &btf.Int{Name: "__u16", Size: 2, Encoding: btf.Unsigned}
			spec.ValueSize = 2
			pinOld(t, dir, spec, nil)
		}, mapName: podMapAxonDevices, reason: "pinned value layout (2 bytes: __u16@0:2) is not a prefix"},
		{name: "fewer entries than held", opts: LoadOptions{EndpointMapMax: 2},
			mapName: podMapAxonEndpoints, reason: "pinned map holds 3 entries, more than this build's max_entries 2"},
		{name: "one map migrates, a later one is refused", old: func(t *testing.T, dir string) {
			spec := buildMapSpec(t, podMapAxonRemote6)
			spec.Type = ebpf.Hash
			spec.Flags = 0
			pinOld(t, dir, spec, nil)
		}, opts: LoadOptions{EndpointMapMax: 64}, mapName: podMapAxonRemote6, reason: "pinned map type Hash, this build's LPMTrie"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := nodePins(t, LoadOptions{EndpointMapMax: 16})
			if tc.old != nil {
				tc.old(t, dir)
			}
			before := pinIDs(t, dir)
			o, err := Load(dir, tc.opts)
			if err == nil {
				o.Close()
				t.Fatal("Load succeeded")
			}
			t.Log(err)
			if !errors.Is(err, ErrIncompatibleMap) {
				t.Errorf("error %v does not wrap ErrIncompatibleMap", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "map "+tc.mapName+": ") || !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q does not name map %s and %q", msg, tc.mapName, tc.reason)
			}
			after := pinIDs(t, dir)
			if len(after) != len(before) {
				t.Errorf("pins %v, want %v", keys(after), keys(before))
			}
			for name, id := range before {
				if after[name] != id {
					t.Errorf("pin %s: map %d, was %d", name, after[name], id)
				}
			}
		})
	}
}

// TestLoadOptions: sizes beyond the bound are refused before anything is
// loaded; the defaults are datapath.h's.
func TestLoadOptions(t *testing.T) {
	for _, opts := range []LoadOptions{{EndpointMapMax: MaxMapMax + 1}, {RemoteMapMax: 1 << 31},
		{ServiceMapMax: MaxMapMax + 1}, {SlotMapMax: MaxMapMax + 1}, {CTMapMax: MaxMapMax + 1}} {
		if o, err := Load("", opts); !errors.Is(err, ErrInvalidOption) {
			if o != nil {
				o.Close()
			}
			t.Errorf("Load(%+v) = %v, want ErrInvalidOption", opts, err)
		}
	}
	spec, err := loadPod()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{
		podMapAxonEndpoints: DefaultEndpointMapMax, podMapAxonEndpoints6: DefaultEndpointMapMax,
		podMapAxonDevices: DefaultEndpointMapMax, podMapAxonRemote4: DefaultRemoteMapMax,
		podMapAxonRemote6: DefaultRemoteMapMax, podMapAxonLbServices: DefaultServiceMapMax,
		podMapAxonLbMeta: DefaultServiceMapMax, podMapAxonLbSlots: DefaultSlotMapMax,
		podMapAxonCt: DefaultCTMapMax,
	} {
		if got := spec.Maps[name].MaxEntries; got != want {
			t.Errorf("%s: max_entries %d in the object, default %d", name, got, want)
		}
	}
}

// TestOpenMapsKinds migrates map kinds the datapath does not have yet
// (per-CPU hash) and value growth of an LPM trie, through openMaps alone,
// and refuses to cut a state array that holds entries past the new size.
func TestOpenMapsKinds(t *testing.T) {
	requireBPF(t)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	u32 := &btf.Int{Name: "__u32", Size: 4, Encoding: btf.Unsigned}
	value := func(members ...string) *btf.Struct {
		s := &btf.Struct{Name: "v", Size: uint32(4 * len(members))}
		for i, m := range members {
			s.Members = append(s.Members, btf.Member{Name: m, Type: u32, Offset: btf.Bits(32 * i)})
		}
		return s
	}
	lpmKey := &btf.Struct{Name: "k", Size: 8, Members: []btf.Member{
		{Name: "prefixlen", Type: u32}, {Name: "ip4", Type: u32, Offset: 32},
	}}
	for _, tc := range []struct {
		name     string
		old, new *ebpf.MapSpec
		key      []byte
		wantErr  string
	}{
		{name: "per-CPU hash value appended",
			old: &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Key: u32, Value: value("a", "b")},
			new: &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 12, MaxEntries: 8, Key: u32, Value: value("a", "b", "c")},
			key: []byte{1, 0, 0, 0}},
		{name: "LPM trie value appended",
			old: &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 4, Flags: unix.BPF_F_NO_PREALLOC, Key: lpmKey, Value: value("a", "b")},
			new: &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 12, MaxEntries: 4, Flags: unix.BPF_F_NO_PREALLOC, Key: lpmKey, Value: value("a", "b", "c")},
			key: []byte{24, 0, 0, 0, 10, 244, 1, 0}},
		{name: "array cut below a set index",
			old:     &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 8, Key: u32, Value: value("a", "b")},
			new:     &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: u32, Value: value("a", "b")},
			key:     []byte{5, 0, 0, 0},
			wantErr: "pinned map holds 6 entries, more than this build's max_entries 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := pinDir(t)
			tc.old.Name, tc.new.Name = "t_map", "t_map"
			perCPU := isPerCPU(tc.old.Type)
			oldValue := func(cpu int) []byte {
				v := make([]byte, tc.old.ValueSize)
				binary.NativeEndian.PutUint32(v, uint32(10+cpu))
				binary.NativeEndian.PutUint32(v[4:], uint32(20+cpu))
				return v
			}
			pinOld(t, dir, tc.old, func(m *ebpf.Map) error {
				if !perCPU {
					return m.Put(tc.key, oldValue(0))
				}
				vs := make([]rawValue, ncpu)
				for i := range vs {
					vs[i] = oldValue(i)
				}
				return m.Put(tc.key, vs)
			})
			before := pinIDs(t, dir)
			opened, err := openMaps(dir, map[string]*ebpf.MapSpec{"t_map": tc.new})
			if tc.wantErr != "" {
				if err == nil {
					opened.close()
				}
				if !errors.Is(err, ErrIncompatibleMap) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("openMaps = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer opened.close()
			if after := pinIDs(t, dir); after["t_map"] != before["t_map"] {
				t.Errorf("pin replaced before commit")
			}
			must(t, "commit", opened.commit())
			m := opened.maps["t_map"]
			if id := mapID(t, filepath.Join(dir, "t_map"), nil); id != mapID(t, "", m) {
				t.Errorf("pin is map %d, not the migrated one", id)
			}
			want := func(cpu int) []byte { return append(oldValue(cpu), 0, 0, 0, 0) }
			if !perCPU {
				got := make([]byte, tc.new.ValueSize)
				must(t, "lookup", m.Lookup(tc.key, got))
				if !slices.Equal(got, want(0)) {
					t.Errorf("migrated value %x, want %x", got, want(0))
				}
				return
			}
			got := make([]rawValue, ncpu)
			for i := range got {
				got[i] = make(rawValue, tc.new.ValueSize)
			}
			must(t, "lookup", m.Lookup(tc.key, got))
			for cpu, v := range got {
				if !slices.Equal(v, want(cpu)) {
					t.Errorf("CPU %d: migrated value %x, want %x", cpu, v, want(cpu))
				}
			}
		})
	}
}

// TestLoadRemovesTemporaryPins: the temporary pin of a start that died
// between pinning a migrated map and renaming it over the old pin is
// removed by the next Load, even when that map does not migrate again.
func TestLoadRemovesTemporaryPins(t *testing.T) {
	dir := nodePins(t, LoadOptions{})
	stale := filepath.Join(dir, "axon_config"+tmpPinSuffix)
	m, err := ebpf.NewMap(buildMapSpec(t, "axon_config"))
	must(t, "create a migrated axon_config", err)
	must(t, "leave its temporary pin", m.Pin(stale))
	m.Close()

	o, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary pin %s after Load: %v", filepath.Base(stale), err)
	}
	checkNodeState(t, o)
}
