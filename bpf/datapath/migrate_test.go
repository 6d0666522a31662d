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
