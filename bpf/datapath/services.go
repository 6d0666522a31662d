package datapath

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// ErrInvalidService: a service entry the programs cannot use (a zero ID, a
// backend of another family than its frontend, too many backends, ...). It
// is wrapped with the frontend and the reason; test with errors.Is.
var ErrInvalidService = errors.New("datapath: invalid service")

// Scope says which clients a frontend entry serves (axon_lb_key.scope).
type Scope uint8

// Scopes of a frontend entry: pods look up a frontend's internal entry
// first and fall back to its external one, which every frontend has.
const (
	ScopeExternal = Scope(podAxonLbScopeAXON_LB_SCOPE_EXTERNAL)
	ScopeInternal = Scope(podAxonLbScopeAXON_LB_SCOPE_INTERNAL)
)

// Frontend is a service address, port and protocol as the programs look
// it up.
type Frontend struct {
	// Addr is IPv4 or IPv6 (an IPv4-mapped address counts as IPv4 and is
	// returned unmapped). The unspecified address is kept for node ports.
	Addr  netip.Addr
	Port  uint16
	Proto uint8 // IANA protocol number: 6 (TCP), 17 (UDP), 132 (SCTP, stored, not translated)
	Scope Scope
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s/%d scope %d", netip.AddrPortFrom(f.Addr.Unmap(), f.Port), f.Proto, f.Scope)
}

// Backend is a destination of a frontend.
type Backend struct {
	Addr  netip.Addr // of the frontend's family
	Port  uint16
	Local bool // runs on this node
}

// Service is a frontend's entry: its backends and what the agent keeps
// with it.
type Service struct {
	// ID names the entry's slots and flows; never 0, unique among the
	// node's entries.
	ID uint32
	// Type is the kind of frontend, opaque to the programs.
	Type uint8
	// Active backends take new connections, each in proportion to how
	// often it appears; Terminating ones only while Active is empty.
	Active, Terminating []Backend
	// AffinityTimeout is the session affinity (ClientIP) timeout in
	// seconds: a client's new connections go to the backend of its
	// previous one if it came less than this long before. 0: none.
	AffinityTimeout uint32
	// Meta is kept with the entry, opaque; at most MaxServiceMeta bytes.
	Meta []byte
	// SourceRanges, when not empty, are the only clients the entry takes
	// new connections from (loadBalancerSourceRanges): others are dropped
	// (drop-source-range). Of the frontend's family, at most
	// MaxSourceRanges; read back masked and sorted.
	SourceRanges []netip.Prefix
	// Maglev, when not empty, is the entry's Maglev table: for each of
	// its MaglevTableSize positions, a slot of Active (an index). New
	// connections take the slot at a fixed-seed hash of their tuple while
	// Active is not empty, so every node picks the same backend for a
	// flow.
	Maglev []uint16
}

// ServiceEntry is a frontend and its entry.
type ServiceEntry struct {
	Frontend Frontend
	Service  Service
}

// Bounds of a service entry.
const (
	MaxServiceMeta  = 512       // AXON_LB_META_MAX
	MaxServiceSlots = 1<<16 - 1 // active plus terminating backends (slots)
)

const lbBackendLocal = 1 // AXON_LB_BACKEND_LOCAL

// addr16 is a of the programs' address form: IPv4 as IPv4-mapped IPv6.
func addr16(a netip.Addr) [16]byte { return netip.AddrFrom16(a.As16()).As16() }

// addrFrom16 is the inverse of addr16: IPv4-mapped addresses unmapped.
func addrFrom16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// port16 is a port as the packet holds it (network order), read natively.
func port16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// portFrom16 is the inverse of port16.
func portFrom16(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func lbKey(f Frontend) podAxonLbKey {
	return podAxonLbKey{Addr: addr16(f.Addr.Unmap()), Port: port16(f.Port), Proto: f.Proto, Scope: uint8(f.Scope)}
}

func frontendFrom(k podAxonLbKey) Frontend {
	return Frontend{Addr: addrFrom16(k.Addr), Port: portFrom16(k.Port), Proto: k.Proto, Scope: Scope(k.Scope)}
}

// checkService says why e cannot be programmed, or nil.
func checkService(e ServiceEntry) error {
	f, s := e.Frontend, e.Service
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: frontend %s: %s", ErrInvalidService, f, fmt.Sprintf(format, args...))
	}
	switch {
	case !f.Addr.IsValid() || f.Addr.Zone() != "":
		return bad("invalid address")
	case f.Port == 0:
		return bad("port 0")
	case f.Proto != 6 && f.Proto != 17 && f.Proto != 132:
		return bad("protocol %d is not TCP, UDP or SCTP", f.Proto)
	case f.Scope != ScopeExternal && f.Scope != ScopeInternal:
		return bad("unknown scope")
	case s.ID == 0:
		return bad("service ID 0")
	case len(s.Active)+len(s.Terminating) > MaxServiceSlots:
		return bad("%d backends, at most %d", len(s.Active)+len(s.Terminating), MaxServiceSlots)
	case len(s.Meta) > MaxServiceMeta:
		return bad("%d bytes of metadata, at most %d", len(s.Meta), MaxServiceMeta)
	case len(s.SourceRanges) > MaxSourceRanges:
		return bad("%d source ranges, at most %d", len(s.SourceRanges), MaxSourceRanges)
	}
	if len(s.Maglev) > 0 {
		if len(s.Maglev) != MaglevTableSize {
			return bad("a Maglev table of %d entries, want %d", len(s.Maglev), MaglevTableSize)
		}
		for _, slot := range s.Maglev {
			if int(slot) >= len(s.Active) {
				return bad("Maglev table entry %d is not one of %d active backends", slot, len(s.Active))
			}
		}
	}
	v4 := f.Addr.Unmap().Is4()
	for _, p := range s.SourceRanges {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() || p.Addr().Is4() != v4 {
			return bad("invalid source range %s (of the frontend's family?)", p)
		}
	}
	for _, b := range append(s.Active[:len(s.Active):len(s.Active)], s.Terminating...) {
		a := b.Addr.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" || b.Port == 0 {
			return bad("invalid backend %s", netip.AddrPortFrom(b.Addr, b.Port))
		}
		if a.Is4() != v4 {
			return bad("backend %s is not of the frontend's family", a)
		}
	}
	return nil
}

// slotsOf returns the slot keys and backends of s under generation gen.
func slotsOf(s Service, gen uint8) ([]podAxonLbSlotKey, []podAxonLbBackend) {
	n := len(s.Active) + len(s.Terminating)
	keys := make([]podAxonLbSlotKey, 0, n)
	vals := make([]podAxonLbBackend, 0, n)
	for i, b := range append(s.Active[:len(s.Active):len(s.Active)], s.Terminating...) {
		v := podAxonLbBackend{Addr: addr16(b.Addr.Unmap()), Port: port16(b.Port)}
		if b.Local {
			v.Flags = lbBackendLocal
		}
		keys = append(keys, podAxonLbSlotKey{ServiceId: s.ID, Slot: uint16(i), Gen: gen})
		vals = append(vals, v)
	}
	return keys, vals
}

// oldSlots returns the slot keys of the entry v in use.
func oldSlots(v podAxonLbService) []podAxonLbSlotKey {
	n := int(v.Active) + int(v.Terminating)
	keys := make([]podAxonLbSlotKey, n)
	for i := range keys {
		keys[i] = podAxonLbSlotKey{ServiceId: v.Id, Slot: uint16(i), Gen: v.Gen}
	}
	return keys
}

// PutServices writes frontend entries in order, every one checked first
// (an invalid one fails the call with [ErrInvalidService] before anything
// is written). Each frontend switches to its new backends at once: they
// are written under the generation its entry does not use, then the entry
// (with the new generation and counts) replaces the old one whole, then
// the old generation's slots are removed; a packet that raced the removal
// picks again on the new entry. The writes go in batches (one syscall per
// map for up to 4096 frontends); a frontend named twice, or whose ID
// another frontend of the call had or takes, starts a new batch, so each
// sees its predecessors' result. Entries written before an error stay written; the
// one that failed and the rest are as they were. A full map is an error
// wrapping unix.E2BIG.
func (o *Objects) PutServices(entries []ServiceEntry) error {
	for _, e := range entries {
		if err := checkService(e); err != nil {
			return err
		}
	}
	if len(entries) == 0 {
		return nil
	}
	o.lbMu.Lock()
	defer o.lbMu.Unlock()
	if err := o.enableLB(); err != nil {
		return err
	}
	// The gates first: a frontend whose port is not gated is not looked up.
	if err := o.markFrontendPorts(entries); err != nil {
		return err
	}
	// The entries in place: read whole for a big call (a few syscalls),
	// else looked up one by one.
	var known map[podAxonLbKey]podAxonLbService
	if len(entries) >= lbReadAllMin {
		known = map[podAxonLbKey]podAxonLbService{}
		if err := readAll(o.maps.AxonLbServices, func(k podAxonLbKey, v podAxonLbService) { known[k] = v }); err != nil {
			return fmt.Errorf("list services: %w", err)
		}
	}
	for len(entries) > 0 {
		n, err := o.putServiceBatch(entries, known)
		if err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}

// enableLB sets AXON_CONFIG_LB: the programs look up frontends and flows
// from now on.
func (o *Objects) enableLB() error {
	var v podAxonConfig
	if err := o.maps.AxonConfig.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if v.Flags&configLB != 0 {
		return nil
	}
	v.Flags |= configLB
	if err := o.maps.AxonConfig.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("enable service lookups: %w", err)
	}
	return nil
}

// lbBatchMax bounds a batch of frontends: until a batch's entries switch,
// each holds its old and its new slots, so a full resync of every frontend
// needs room for this many frontends' slots twice, not for all of them.
const lbBatchMax = 4096

// lbReadAllMin is the size of a PutServices call from which the entries in
// place are read whole rather than one by one.
const lbReadAllMin = 1024

// putServiceBatch writes a prefix of entries (at most lbBatchMax) in which
// no frontend repeats and no ID is shared, and returns its length. known,
// unless nil, holds every entry in place, and is kept up to date.
func (o *Objects) putServiceBatch(entries []ServiceEntry, known map[podAxonLbKey]podAxonLbService) (int, error) {
	var (
		keys     []podAxonLbKey
		olds     []*podAxonLbService
		vals     []podAxonLbService
		slotKeys []podAxonLbSlotKey
		slotVals []podAxonLbBackend
		seenKey  = map[podAxonLbKey]bool{}
		seenID   = map[uint32]bool{}
		// withRanges: an entry of the batch has source ranges, or had.
		withRanges bool
		ranges     map[uint32][]netip.Prefix
	)
	n := 0
	for _, e := range entries[:min(len(entries), lbBatchMax)] {
		k := lbKey(e.Frontend)
		old, exists := known[k]
		if known == nil {
			err := o.maps.AxonLbServices.Lookup(&k, &old)
			exists = err == nil
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return 0, fmt.Errorf("look up service %s: %w", e.Frontend, err)
			}
		}
		if seenKey[k] || seenID[e.Service.ID] || (exists && seenID[old.Id]) {
			break
		}
		if len(e.Service.SourceRanges) > 0 || (exists && old.Flags&lbFlagSourceRanges != 0) {
			withRanges = true
		}
		seenKey[k], seenID[e.Service.ID] = true, true
		v := podAxonLbService{
			Id:              e.Service.ID,
			Active:          uint16(len(e.Service.Active)),
			Terminating:     uint16(len(e.Service.Terminating)),
			Type:            e.Service.Type,
			AffinityTimeout: e.Service.AffinityTimeout,
		}
		if len(e.Service.SourceRanges) > 0 {
			v.Flags |= lbFlagSourceRanges
		}
		if len(e.Service.Maglev) > 0 {
			v.Flags |= lbFlagMaglev
		}
		if exists {
			seenID[old.Id] = true
			v.Gen = old.Gen ^ 1
			olds = append(olds, &old)
		} else {
			olds = append(olds, nil)
		}
		sk, sv := slotsOf(e.Service, v.Gen)
		slotKeys, slotVals = append(slotKeys, sk...), append(slotVals, sv...)
		keys, vals = append(keys, k), append(vals, v)
		n++
	}
	batch := entries[:n]
	// Source ranges go in before the entries that use them, and the old
	// ones out after the switch, as the slots.
	if withRanges {
		var err error
		if ranges, err = o.sourceRanges(); err != nil {
			return 0, err
		}
		for i, e := range batch {
			if err := o.putSourceRanges(e.Service.ID, e.Service.SourceRanges); err != nil {
				for _, e := range batch[:i+1] {
					o.deleteSourceRanges(e.Service.ID, e.Service.SourceRanges, ranges[e.Service.ID])
				}
				return 0, fmt.Errorf("service %s: %w", e.Frontend, err)
			}
		}
	}
	// Maglev tables go in with the slots of their generation.
	for i, e := range batch {
		if len(e.Service.Maglev) == 0 {
			continue
		}
		if err := o.putMaglev(e.Service.ID, vals[i].Gen, e.Service.Maglev); err != nil {
			for j := range batch[:i] {
				o.deleteMaglev(batch[j].Service.ID, vals[j].Gen)
			}
			for _, e := range batch {
				o.deleteSourceRanges(e.Service.ID, e.Service.SourceRanges, ranges[e.Service.ID])
			}
			return 0, fmt.Errorf("service %s: %w", e.Frontend, err)
		}
	}
	if len(slotKeys) > 0 {
		if done, err := o.maps.AxonLbSlots.BatchUpdate(slotKeys, slotVals, nil); err != nil {
			o.deleteSlots(slotKeys[:done])
			for i, e := range batch {
				if len(e.Service.Maglev) > 0 {
					o.deleteMaglev(e.Service.ID, vals[i].Gen)
				}
			}
			for _, e := range batch {
				o.deleteSourceRanges(e.Service.ID, e.Service.SourceRanges, ranges[e.Service.ID])
			}
			return 0, fmt.Errorf("write backends of service %s: %w", batch[0].Frontend, err)
		}
	}
	done, err := o.maps.AxonLbServices.BatchUpdate(keys, vals, nil)
	if known != nil {
		for i := range done {
			known[keys[i]] = vals[i]
		}
	}
	// The switched frontends' old slots go; the others' new slots too.
	var stale []podAxonLbSlotKey
	for i, old := range olds {
		if i < done && old != nil {
			stale = append(stale, oldSlots(*old)...)
			if old.Flags&lbFlagMaglev != 0 {
				o.deleteMaglev(old.Id, old.Gen)
			}
			if withRanges {
				var keep []netip.Prefix
				if old.Id == batch[i].Service.ID {
					keep = batch[i].Service.SourceRanges
				}
				o.deleteSourceRanges(old.Id, ranges[old.Id], keep)
			}
		}
		if i >= done {
			sk, _ := slotsOf(batch[i].Service, vals[i].Gen)
			stale = append(stale, sk...)
			if len(batch[i].Service.Maglev) > 0 {
				o.deleteMaglev(batch[i].Service.ID, vals[i].Gen)
			}
			if withRanges {
				o.deleteSourceRanges(batch[i].Service.ID, batch[i].Service.SourceRanges, ranges[batch[i].Service.ID])
			}
		}
	}
	o.deleteSlots(stale)
	// The programs never read the metadata: it follows the entries.
	if merr := o.putMeta(batch[:done], olds[:done]); merr != nil {
		return 0, merr
	}
	if err != nil {
		return 0, fmt.Errorf("write service %s: %w", batch[done].Frontend, err)
	}
	return n, nil
}

// putMeta writes the metadata of the batch's services and removes that of
// IDs no entry keeps.
func (o *Objects) putMeta(batch []ServiceEntry, olds []*podAxonLbService) error {
	var (
		ids  []uint32
		vals []podAxonLbMeta
	)
	for i, e := range batch {
		// Only a frontend that had an entry may leave metadata behind
		// (DeleteServices removes a deleted one's).
		old := olds[i]
		if old != nil && old.Id != e.Service.ID {
			o.deleteMeta(old.Id)
		}
		if len(e.Service.Meta) == 0 {
			if old != nil {
				o.deleteMeta(e.Service.ID)
			}
			continue
		}
		v := podAxonLbMeta{Len: uint16(len(e.Service.Meta))}
		copy(v.Data[:], e.Service.Meta)
		ids, vals = append(ids, e.Service.ID), append(vals, v)
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := o.maps.AxonLbMeta.BatchUpdate(ids, vals, nil); err != nil {
		return fmt.Errorf("write service metadata: %w", err)
	}
	return nil
}

func (o *Objects) deleteMeta(id uint32) {
	_ = o.maps.AxonLbMeta.Delete(&id) // missing: nothing to do
}

// deleteSlots removes slots, in one batch when they all exist.
func (o *Objects) deleteSlots(keys []podAxonLbSlotKey) {
	if len(keys) == 0 {
		return
	}
	done, err := o.maps.AxonLbSlots.BatchDelete(keys, nil)
	if err == nil {
		return
	}
	// The batch stops at the first missing key: the rest one by one.
	for i := done; i < len(keys); i++ {
		_ = o.maps.AxonLbSlots.Delete(&keys[i])
	}
}

// DeleteServices removes frontends with their backends and metadata;
// missing ones are skipped. Their flows stay until they expire or
// [Objects.DeleteFlows] removes them.
func (o *Objects) DeleteServices(frontends []Frontend) error {
	o.lbMu.Lock()
	defer o.lbMu.Unlock()
	for _, f := range frontends {
		k := lbKey(f)
		var v podAxonLbService
		if err := o.maps.AxonLbServices.Lookup(&k, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return fmt.Errorf("look up service %s: %w", f, err)
		}
		if err := o.maps.AxonLbServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %s: %w", f, err)
		}
		o.deleteSlots(oldSlots(v))
		o.deleteMeta(v.Id)
		if v.Flags&lbFlagMaglev != 0 {
			o.deleteMaglev(v.Id, v.Gen)
		}
		if v.Flags&lbFlagSourceRanges != 0 {
			ranges, err := o.sourceRanges()
			if err != nil {
				return fmt.Errorf("service %s: %w", f, err)
			}
			o.deleteSourceRanges(v.Id, ranges[v.Id], nil)
		}
	}
	return nil
}

// Services reads every frontend entry back as written.
func (o *Objects) Services() ([]ServiceEntry, error) {
	o.lbMu.Lock()
	defer o.lbMu.Unlock()
	slots := map[podAxonLbSlotKey]podAxonLbBackend{}
	if err := readAll(o.maps.AxonLbSlots, func(k podAxonLbSlotKey, v podAxonLbBackend) { slots[k] = v }); err != nil {
		return nil, fmt.Errorf("list service backends: %w", err)
	}
	meta := map[uint32][]byte{}
	if err := readAll(o.maps.AxonLbMeta, func(id uint32, m podAxonLbMeta) {
		meta[id] = append([]byte(nil), m.Data[:min(int(m.Len), len(m.Data))]...)
	}); err != nil {
		return nil, fmt.Errorf("list service metadata: %w", err)
	}
	ranges, err := o.sourceRanges()
	if err != nil {
		return nil, err
	}
	var (
		out []ServiceEntry
		bad error
	)
	if err := readAll(o.maps.AxonLbServices, func(k podAxonLbKey, v podAxonLbService) {
		e := ServiceEntry{Frontend: frontendFrom(k), Service: Service{
			ID: v.Id, Type: v.Type, AffinityTimeout: v.AffinityTimeout, Meta: meta[v.Id],
		}}
		if v.Flags&lbFlagSourceRanges != 0 {
			e.Service.SourceRanges = slices.SortedFunc(slices.Values(ranges[v.Id]), comparePrefix)
		}
		if v.Flags&lbFlagMaglev != 0 {
			t, err := o.maglev(v.Id, v.Gen)
			if err != nil && bad == nil {
				bad = fmt.Errorf("service %s: %w", e.Frontend, err)
			}
			e.Service.Maglev = t
		}
		for i, key := range oldSlots(v) {
			b, ok := slots[key]
			if !ok && bad == nil {
				bad = fmt.Errorf("service %s: backend slot %d of generation %d missing", e.Frontend, key.Slot, key.Gen)
			}
			be := Backend{Addr: addrFrom16(b.Addr), Port: portFrom16(b.Port), Local: b.Flags&lbBackendLocal != 0}
			if i < int(v.Active) {
				e.Service.Active = append(e.Service.Active, be)
			} else {
				e.Service.Terminating = append(e.Service.Terminating, be)
			}
		}
		out = append(out, e)
	}); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
