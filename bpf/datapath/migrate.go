package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// migration is what openPinned does with a pinned map: reuse it, or copy
// its entries into a new map of this build's spec.
type migration struct {
	reuse bool
	// oldValue and newValue are the value sizes: values are zero-extended.
	oldValue, newValue int
	perCPU             bool
	// arrayMax, for arrays, is the new map's size: indexes beyond it were
	// checked to be zero (or are counters that may be dropped).
	array    bool
	arrayMax uint32
}

// counterMaps hold statistics, not state: a build with fewer counters
// drops the ones it no longer has instead of being refused.
var counterMaps = map[string]bool{podMapAxonStats: true}

// programStateMaps are the maps the programs write state into: a migrated
// one is copied again once the devices run the new programs
// ([Objects.FinishMigration]), for what the old programs wrote meanwhile.
var programStateMaps = map[string]bool{podMapAxonCt: true}

// planMigration decides how the pinned map old becomes spec's map, or
// says why it cannot (an error wrapping ErrIncompatibleMap).
func planMigration(old *ebpf.Map, spec *ebpf.MapSpec) (migration, error) {
	if old.Type() != spec.Type {
		return migration{}, fmt.Errorf("pinned map type %s, this build's %s: %w", old.Type(), spec.Type, ErrIncompatibleMap)
	}
	oldKey, oldValue, err := pinnedLayouts(old)
	if err != nil {
		return migration{}, err
	}
	newKey, newValue := specLayout(spec.Key, spec.KeySize), specLayout(spec.Value, spec.ValueSize)
	if !oldKey.equal(newKey) {
		return migration{}, fmt.Errorf("pinned key layout (%s) differs from this build's (%s): %w", oldKey, newKey, ErrIncompatibleMap)
	}
	if !oldValue.prefixOf(newValue) {
		return migration{}, fmt.Errorf("pinned value layout (%s) is not a prefix of this build's (%s): %w", oldValue, newValue, ErrIncompatibleMap)
	}
	plan := migration{
		oldValue: int(old.ValueSize()),
		newValue: int(spec.ValueSize),
		perCPU:   isPerCPU(spec.Type),
		array:    isArray(spec.Type),
		arrayMax: spec.MaxEntries,
	}
	if old.ValueSize() == spec.ValueSize && old.MaxEntries() == spec.MaxEntries && old.Flags() == spec.Flags {
		plan.reuse = true
		return plan, nil
	}
	if spec.MaxEntries < old.MaxEntries() {
		held, err := plan.held(old)
		if err != nil {
			return migration{}, fmt.Errorf("count entries: %w", err)
		}
		if held > int(spec.MaxEntries) && !(plan.array && counterMaps[spec.Name]) {
			return migration{}, fmt.Errorf("pinned map holds %d entries, more than this build's max_entries %d: %w", held, spec.MaxEntries, ErrIncompatibleMap)
		}
	}
	return plan, nil
}

func isPerCPU(t ebpf.MapType) bool {
	return t == ebpf.PerCPUArray || t == ebpf.PerCPUHash || t == ebpf.LRUCPUHash
}

func isArray(t ebpf.MapType) bool { return t == ebpf.Array || t == ebpf.PerCPUArray }

// held counts the entries of a map: for an array, one past the last index
// with a value that is not all zero, since an array always holds every
// index.
func (p migration) held(m *ebpf.Map) (int, error) {
	n := 0
	err := p.each(m, func(key []byte, values [][]byte) error {
		if !p.array {
			n++
			return nil
		}
		for _, v := range values {
			if !allZero(v) {
				n = int(binary.NativeEndian.Uint32(key)) + 1
				break
			}
		}
		return nil
	})
	return n, err
}

// copy puts every entry of old into m, values zero-extended to m's size.
// Array indexes beyond m are skipped: held checked that they are zero, or
// that they are counters.
func (p migration) copy(old, m *ebpf.Map) error {
	return p.copyFlags(old, m, ebpf.UpdateAny)
}

// copyMissing is copy for the entries m does not hold yet: those of old
// written since the first copy, or stale ones m's programs removed (which
// m's owner expires again).
func (p migration) copyMissing(old, m *ebpf.Map) error {
	return p.copyFlags(old, m, ebpf.UpdateNoExist)
}

func (p migration) copyFlags(old, m *ebpf.Map, flags ebpf.MapUpdateFlags) error {
	return p.each(old, func(key []byte, values [][]byte) error {
		if p.array && binary.NativeEndian.Uint32(key) >= p.arrayMax {
			return nil
		}
		grown := make([]rawValue, len(values))
		for i, v := range values {
			grown[i] = rawValue(append(v[:len(v):len(v)], make([]byte, p.newValue-p.oldValue)...))
		}
		var err error
		if p.perCPU {
			err = m.Update(key, grown, flags)
		} else {
			err = m.Update(key, []byte(grown[0]), flags)
		}
		if flags == ebpf.UpdateNoExist && errors.Is(err, ebpf.ErrKeyExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("put key %x: %w", key, err)
		}
		return nil
	})
}

// each calls fn with every key of m and its value (one per possible CPU
// for a per-CPU map, else one).
func (p migration) each(m *ebpf.Map, fn func(key []byte, values [][]byte) error) error {
	ncpu := 1
	if p.perCPU {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return fmt.Errorf("possible CPUs: %w", err)
		}
		ncpu = n
	}
	key := make([]byte, m.KeySize())
	vals := make([]rawValue, ncpu)
	for i := range vals {
		vals[i] = make(rawValue, p.oldValue)
	}
	var value any = []byte(vals[0])
	if p.perCPU {
		value = vals
	}
	it := m.Iterate()
	for it.Next(key, value) {
		out := make([][]byte, ncpu)
		for i, v := range vals {
			out[i] = bytes.Clone(v)
		}
		if err := fn(bytes.Clone(key), out); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	return nil
}

// rawValue is one CPU's value of a per-CPU map as bytes; the library
// marshals per-CPU values element by element.
type rawValue []byte

// MarshalBinary implements encoding.BinaryMarshaler.
func (r rawValue) MarshalBinary() ([]byte, error) { return r, nil }

// UnmarshalBinary implements encoding.BinaryUnmarshaler into the
// preallocated slice.
func (r *rawValue) UnmarshalBinary(b []byte) error {
	if len(b) != len(*r) {
		return fmt.Errorf("value of %d bytes, want %d", len(b), len(*r))
	}
	copy(*r, b)
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// layout is a key or value type as far as pinned maps care: its size and
// its members' names, offsets and sizes. A scalar is one member named after
// its type for messages but compared by its encoding, so that a typedef
// renamed (__u32 to u32) keeps the layout. unknown: the map has no BTF to
// tell.
type layout struct {
	size    uint32
	fields  []field
	scalar  bool
	unknown bool
}

type field struct {
	name      string
	off, size uint32 // in bits, so bitfields compare exactly
	enc       string // a scalar's encoding, see scalarEncoding
}

// same reports whether f and g hold the same bits: a struct member by
// name, a scalar by encoding.
func (f field) same(g field) bool {
	if f.enc != "" || g.enc != "" {
		return f.enc == g.enc && f.off == g.off && f.size == g.size
	}
	return f == g
}

func (l layout) String() string {
	if l.unknown {
		return fmt.Sprintf("%d bytes, no BTF", l.size)
	}
	parts := make([]string, len(l.fields))
	for i, f := range l.fields {
		if f.off%8 == 0 && f.size%8 == 0 {
			parts[i] = fmt.Sprintf("%s@%d:%d", f.name, f.off/8, f.size/8)
		} else {
			parts[i] = fmt.Sprintf("%s@bit%d:%dbits", f.name, f.off, f.size)
		}
	}
	return fmt.Sprintf("%d bytes: %s", l.size, strings.Join(parts, " "))
}

func (l layout) equal(n layout) bool {
	return l.size == n.size && l.prefixOf(n)
}

// prefixOf reports whether a value of layout l, zero-extended, is a value
// of layout n: n starts with l's members unchanged. Without BTF only equal
// sizes can be trusted.
func (l layout) prefixOf(n layout) bool {
	if l.unknown || n.unknown {
		return l.size == n.size
	}
	if n.size < l.size || len(n.fields) < len(l.fields) {
		return false
	}
	if (l.scalar || n.scalar) && l.size != n.size {
		return false // a scalar that grew was resized, not appended to
	}
	for i, f := range l.fields {
		if !n.fields[i].same(f) {
			return false
		}
	}
	return true
}

func specLayout(t btf.Type, size uint32) layout {
	if t == nil {
		return layout{size: size, unknown: true}
	}
	return typeLayout(t, size)
}

func typeLayout(t btf.Type, size uint32) layout {
	l := layout{size: size}
	s, ok := btf.UnderlyingType(t).(*btf.Struct)
	if !ok {
		name := t.TypeName()
		if name == "" {
			name = fmt.Sprintf("%T", btf.UnderlyingType(t))
		}
		return layout{size: size, fields: []field{{name: name, size: size * 8, enc: scalarEncoding(t)}}, scalar: true}
	}
	for _, m := range s.Members {
		bits := uint32(m.BitfieldSize)
		if bits == 0 {
			n, err := btf.Sizeof(m.Type)
			if err != nil {
				return layout{size: size, unknown: true}
			}
			bits = uint32(n) * 8
		}
		l.fields = append(l.fields, field{name: m.Name, off: uint32(m.Offset), size: bits})
	}
	return l
}

// scalarEncoding says how the bits of a scalar type are read, whatever its
// (typedef) name: the signedness of an integer or an enum, an array's
// length and elements; the kind of anything else.
func scalarEncoding(t btf.Type) string {
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		return u.Encoding.String()
	case *btf.Enum:
		if u.Signed {
			return btf.Signed.String()
		}
		return btf.Unsigned.String()
	case *btf.Array:
		return fmt.Sprintf("[%d]%s", u.Nelems, scalarEncoding(u.Type))
	default:
		return fmt.Sprintf("%T", u)
	}
}

// pinnedLayouts reads the key and value layouts of a map from its BTF.
func pinnedLayouts(m *ebpf.Map) (key, value layout, err error) {
	key = layout{size: m.KeySize(), unknown: true}
	value = layout{size: m.ValueSize(), unknown: true}
	info, err := mapBTFInfo(m)
	if err != nil {
		return key, value, fmt.Errorf("read map info: %w", err)
	}
	if info.btfID == 0 {
		return key, value, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.btfID))
	if err != nil {
		return key, value, fmt.Errorf("open map BTF %d: %w", info.btfID, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return key, value, fmt.Errorf("parse map BTF %d: %w", info.btfID, err)
	}
	lookup := func(id uint32, size uint32) (layout, error) {
		if id == 0 {
			return layout{size: size, unknown: true}, nil
		}
		t, err := spec.TypeByID(btf.TypeID(id))
		if err != nil {
			return layout{}, fmt.Errorf("map BTF type %d: %w", id, err)
		}
		return typeLayout(t, size), nil
	}
	if key, err = lookup(info.keyTypeID, m.KeySize()); err != nil {
		return key, value, err
	}
	value, err = lookup(info.valueTypeID, m.ValueSize())
	return key, value, err
}

// btfInfo is what bpf_map_info says of a map's BTF. The library's MapInfo
// has the BTF object but not the key and value type IDs in it.
type btfInfo struct{ btfID, keyTypeID, valueTypeID uint32 }

// bpfMapInfo is struct bpf_map_info of linux/bpf.h up to
// btf_value_type_id; the kernel fills what fits in info_len.
type bpfMapInfo struct {
	typ, id, keySize, valueSize, maxEntries, flags uint32
	name                                           [16]byte
	ifindex, btfVmlinuxValueTypeID                 uint32
	netnsDev, netnsIno                             uint64
	btfID, btfKeyTypeID, btfValueTypeID            uint32
}

func mapBTFInfo(m *ebpf.Map) (btfInfo, error) {
	// The kernel takes the buffer's address as a __u64: pin it so it stays
	// where the address says.
	info := new(bpfMapInfo)
	var pinner runtime.Pinner
	pinner.Pin(info)
	defer pinner.Unpin()
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{fd: uint32(m.FD()), infoLen: uint32(unsafe.Sizeof(*info)), info: uint64(uintptr(unsafe.Pointer(info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(m) // its descriptor
	if errno != 0 {
		return btfInfo{}, fmt.Errorf("BPF_OBJ_GET_INFO_BY_FD: %w", errno)
	}
	return btfInfo{btfID: info.btfID, keyTypeID: info.btfKeyTypeID, valueTypeID: info.btfValueTypeID}, nil
}
