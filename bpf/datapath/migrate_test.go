package datapath

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestScalarLayout: a scalar key or value keeps its layout when only its
// type's name changes, and changes it when its size or signedness does.
func TestScalarLayout(t *testing.T) {
	u32 := &btf.Int{Name: "unsigned int", Size: 4, Encoding: btf.Unsigned}
	s32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	typedef := func(name string, typ btf.Type) btf.Type { return &btf.Typedef{Name: name, Type: typ} }
	for _, tc := range []struct {
		name      string
		old, next btf.Type
		size      uint32
		want      bool
	}{
		{"same type", typedef("__u32", u32), typedef("__u32", u32), 4, true},
		{"typedef renamed", typedef("__u32", u32), typedef("u32", u32), 4, true},
		{"typedef dropped", typedef("__u32", u32), u32, 4, true},
		{"unsigned enum for an unsigned int", &btf.Enum{Name: "axon_mode", Size: 4}, u32, 4, true},
		{"signedness changed", typedef("__u32", u32), typedef("__s32", s32), 4, false},
		{"array of another element", &btf.Array{Type: &btf.Int{Size: 1}, Nelems: 4}, u32, 4, false},
		{"scalar and struct", u32, &btf.Struct{Name: "k", Size: 4, Members: []btf.Member{{Name: "v", Type: u32}}}, 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, next := typeLayout(tc.old, tc.size), typeLayout(tc.next, tc.size)
			if got := old.equal(next); got != tc.want {
				t.Errorf("layout %s equal to %s: %v, want %v", old, next, got, tc.want)
			}
		})
	}
}

// TestFinishMigration: flows the old programs add to a connection tracker
// after Load migrated it (before the devices move to the new programs)
// reach the new map with FinishMigration; entries the new map already
// holds keep their newer values.
func TestFinishMigration(t *testing.T) {
	requireBPF(t)
	dir := pinDir(t)
	old, err := Load(dir, LoadOptions{CTMapMax: 64})
	must(t, "load", err)
	t.Cleanup(func() { old.Close() })
	key := func(port uint16) podAxonCtKey { return podAxonCtKey{Sport: port, Proto: 6} }
	must(t, "put", old.maps.AxonCt.Put(key(1), podAxonCtEntry{ServiceId: 1}))

	o, err := Load(dir, LoadOptions{CTMapMax: 128})
	must(t, "upgrade", err)
	t.Cleanup(func() { o.Close() })
	if o.maps.AxonCt.MaxEntries() != 128 {
		t.Fatalf("axon_ct not migrated: max_entries %d", o.maps.AxonCt.MaxEntries())
	}
	// The old programs go on writing into the old map; the new ones into
	// the new map.
	must(t, "put old", old.maps.AxonCt.Put(key(2), podAxonCtEntry{ServiceId: 2}))
	must(t, "put old", old.maps.AxonCt.Put(key(1), podAxonCtEntry{ServiceId: 10}))
	must(t, "put new", o.maps.AxonCt.Put(key(1), podAxonCtEntry{ServiceId: 11}))
	must(t, "finish", o.FinishMigration())
	for port, want := range map[uint16]uint32{1: 11, 2: 2} {
		var v podAxonCtEntry
		if err := o.maps.AxonCt.Lookup(key(port), &v); err != nil || v.ServiceId != want {
			t.Errorf("entry %d = %+v, %v; want service %d", port, v, err, want)
		}
	}
	must(t, "finish again", o.FinishMigration())
}
