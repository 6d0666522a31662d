package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Flow is a connection the programs translated for a service, as the
// connection tracker holds it.
type Flow struct {
	ServiceID uint32 // the frontend's Service.ID
	Proto     uint8
	// Client and Frontend are what the client used; Backend is where the
	// programs send it. IPv4 addresses are unmapped.
	Client, Frontend, Backend netip.AddrPort
}

// Connection tracker flags and directions (datapath.h).
const (
	ctForward    = uint8(podAxonCtDirAXON_CT_FORWARD)
	ctReply      = uint8(podAxonCtDirAXON_CT_REPLY)
	ctTCPClosing = 1 // AXON_CT_F_TCP_CLOSING
	ctSeen       = 2 // AXON_CT_F_SEEN
)

// Idle timeouts of flows (datapath.h, AXON_CT_TIMEOUT_*).
const (
	CTTimeoutTCP      = 6 * time.Hour    // established TCP
	CTTimeoutTCPSyn   = 60 * time.Second // TCP whose reply never passed
	CTTimeoutTCPClose = 10 * time.Second // TCP after a FIN or RST
	CTTimeoutOther    = 60 * time.Second // UDP and the rest
)

// ctEntries reads the whole connection tracker.
func (o *Objects) ctEntries() (map[podAxonCtKey]podAxonCtEntry, error) {
	out := map[podAxonCtKey]podAxonCtEntry{}
	if err := readAll(o.maps.AxonCt, func(k podAxonCtKey, v podAxonCtEntry) { out[k] = v }); err != nil {
		return nil, fmt.Errorf("list connection tracker: %w", err)
	}
	return out, nil
}

// replyKey is the REPLY key of the translated flow whose FORWARD entry is
// (k, v): the backend answering the client.
func replyKey(k podAxonCtKey, v podAxonCtEntry) podAxonCtKey {
	return podAxonCtKey{Saddr: v.ToDaddr, Daddr: v.ToSaddr, Sport: v.ToDport, Dport: v.ToSport, Proto: k.Proto, Dir: ctReply}
}

func flowOf(k podAxonCtKey, v podAxonCtEntry) Flow {
	return Flow{
		ServiceID: v.ServiceId,
		Proto:     k.Proto,
		Client:    netip.AddrPortFrom(addrFrom16(k.Saddr), portFrom16(k.Sport)),
		Frontend:  netip.AddrPortFrom(addrFrom16(k.Daddr), portFrom16(k.Dport)),
		Backend:   netip.AddrPortFrom(addrFrom16(v.ToDaddr), portFrom16(v.ToDport)),
	}
}

// Flows returns the translated flows the connection tracker holds.
func (o *Objects) Flows() ([]Flow, error) {
	all, err := o.ctEntries()
	if err != nil {
		return nil, err
	}
	var flows []Flow
	for k, v := range all {
		if k.Dir == ctForward && v.ServiceId != 0 {
			flows = append(flows, flowOf(k, v))
		}
	}
	return flows, nil
}

// deleteCT removes connection tracker entries; missing ones are skipped.
func (o *Objects) deleteCT(keys []podAxonCtKey) error {
	for i := range keys {
		if err := o.maps.AxonCt.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete connection tracker entry: %w", err)
		}
	}
	return nil
}

// DeleteFlows removes both entries of every translated flow for which
// match returns true, and returns how many flows it removed. The next
// packet of such a flow is a new connection.
func (o *Objects) DeleteFlows(match func(Flow) bool) (int, error) {
	return o.deleteFlows(match, true)
}

// UnpinFlows removes the FORWARD entry of every translated flow for which
// match returns true, and returns how many flows it unpinned. The client's
// next packet is a new connection, which picks its backend anew, while
// answers already on their way from the old backend are still translated
// back: the REPLY entry stays until it is idle for its timeout
// ([Objects.ExpireFlows] ages an entry without its other half by itself).
func (o *Objects) UnpinFlows(match func(Flow) bool) (int, error) {
	return o.deleteFlows(match, false)
}

func (o *Objects) deleteFlows(match func(Flow) bool, replies bool) (int, error) {
	all, err := o.ctEntries()
	if err != nil {
		return 0, err
	}
	var del []podAxonCtKey
	n := 0
	for k, v := range all {
		if k.Dir != ctForward || v.ServiceId == 0 || !match(flowOf(k, v)) {
			continue
		}
		del = append(del, k)
		if replies {
			del = append(del, replyKey(k, v))
		}
		n++
	}
	return n, o.deleteCT(del)
}

// ExpireFlows removes the flows idle for longer than their timeout
// (CTTimeout*): a flow is as recent as the newer of its two entries, and
// established once its reply direction passed. Entries without their other
// half expire by their own age. It returns how many flows (or lone
// entries) it removed.
func (o *Objects) ExpireFlows() (int, error) {
	var ts unix.Timespec
	// bpf_ktime_get_coarse_ns, which stamps the flows, is CLOCK_MONOTONIC.
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return o.expireFlows(uint64(ts.Nano()))
}

// expireFlows is ExpireFlows at monotonic time now (ns).
func (o *Objects) expireFlows(now uint64) (int, error) {
	all, err := o.ctEntries()
	if err != nil {
		return 0, err
	}
	var del []podAxonCtKey
	n := 0
	paired := map[podAxonCtKey]bool{}
	for k, v := range all {
		if k.Dir != ctForward {
			continue
		}
		rk := replyKey(k, v)
		rv, ok := all[rk]
		if !ok {
			continue
		}
		paired[rk], paired[k] = true, true
		last, flags := max(v.LastSeen, rv.LastSeen), v.Flags|rv.Flags
		// Established: the backend answered (its entry saw a packet).
		if !expired(now, last, k.Proto, flags, rv.Flags&ctSeen != 0) || o.touchedSince(all, k, rk) {
			continue
		}
		del = append(del, k, rk)
		n++
	}
	for k, v := range all {
		if paired[k] || !expired(now, v.LastSeen, k.Proto, v.Flags, v.Flags&ctSeen != 0) || o.touchedSince(all, k) {
			continue
		}
		del = append(del, k)
		n++
	}
	return n, o.deleteCT(del)
}

// touchedSince reports whether a packet refreshed one of keys' entries
// since the snapshot all was read (or the entry is gone): a flow that came
// back to life while the tracker was being read is not expired.
func (o *Objects) touchedSince(all map[podAxonCtKey]podAxonCtEntry, keys ...podAxonCtKey) bool {
	for _, k := range keys {
		var v podAxonCtEntry
		if err := o.maps.AxonCt.Lookup(&k, &v); err != nil || v.LastSeen != all[k].LastSeen {
			return true
		}
	}
	return false
}

// expired says whether an entry last seen at last (ns) is past its
// timeout at now.
func expired(now, last uint64, proto uint8, flags uint32, established bool) bool {
	timeout := CTTimeoutOther
	if proto == unix.IPPROTO_TCP {
		switch {
		case flags&ctTCPClosing != 0:
			timeout = CTTimeoutTCPClose
		case !established:
			timeout = CTTimeoutTCPSyn
		default:
			timeout = CTTimeoutTCP
		}
	}
	return now > last && time.Duration(now-last) > timeout
}

// MapUsage is how full one map is.
type MapUsage struct {
	Name              string
	Entries, Capacity int
}

// Usage reports how full every map is: entries counted by iteration
// (arrays always hold all of theirs), capacity its max_entries.
func (o *Objects) Usage() ([]MapUsage, error) {
	var out []MapUsage
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{
		{podMapAxonEndpoints, o.maps.AxonEndpoints}, {podMapAxonEndpoints6, o.maps.AxonEndpoints6},
		{podMapAxonDevices, o.maps.AxonDevices}, {podMapAxonRemote4, o.maps.AxonRemote4},
		{podMapAxonRemote6, o.maps.AxonRemote6}, {podMapAxonConfig, o.maps.AxonConfig},
		{podMapAxonStats, o.maps.AxonStats}, {podMapAxonLbServices, o.maps.AxonLbServices},
		{podMapAxonLbSlots, o.maps.AxonLbSlots}, {podMapAxonLbMeta, o.maps.AxonLbMeta},
		{podMapAxonCt, o.maps.AxonCt}, {podMapAxonLbAffinity, o.maps.AxonLbAffinity},
		{podMapAxonLbSourceRanges, o.maps.AxonLbSourceRanges}, {podMapAxonLbMaglev, o.maps.AxonLbMaglev},
		{podMapAxonNodeAddrs, o.maps.AxonNodeAddrs},
	} {
		u := MapUsage{Name: m.name, Capacity: int(m.m.MaxEntries())}
		if isArray(m.m.Type()) {
			u.Entries = u.Capacity
		} else {
			n, err := countKeys(m.m)
			if err != nil {
				return nil, fmt.Errorf("count entries of %s: %w", m.name, err)
			}
			u.Entries = n
		}
		out = append(out, u)
	}
	return out, nil
}

// countKeys counts a map's keys, walking them without reading values.
func countKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	n := 0
	var cur any // nil: the first key
	for {
		err := m.NextKey(cur, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		// A key deleted under the walk restarts it: the count is
		// approximate on a busy map, and bounded.
		if n >= int(m.MaxEntries()) {
			return n, nil
		}
		copy(key, next)
		cur = key
	}
}
