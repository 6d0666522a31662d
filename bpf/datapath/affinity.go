package datapath

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Affinity is a client's remembered backend of a frontend entry with
// session affinity (axon_lb_affinity).
type Affinity struct {
	ServiceID uint32
	Client    netip.Addr
	Backend   netip.AddrPort
	// LastUsed is the monotonic time (ns, bpf_ktime_get_ns) of the
	// client's last new connection.
	LastUsed uint64
}

// Affinities lists the remembered backends of clients with session
// affinity, expired ones included.
func (o *Objects) Affinities() ([]Affinity, error) {
	var out []Affinity
	if err := readAll(o.maps.AxonLbAffinity, func(k podAxonLbAffinityKey, v podAxonLbAffinity) {
		out = append(out, Affinity{
			ServiceID: k.ServiceId,
			Client:    addrFrom16(k.Client),
			Backend:   netip.AddrPortFrom(addrFrom16(v.Backend.Addr), portFrom16(v.Backend.Port)),
			LastUsed:  v.LastUsed,
		})
	}); err != nil {
		return nil, fmt.Errorf("list session affinities: %w", err)
	}
	return out, nil
}

// ExpireAffinity forgets the clients' remembered backends that the
// programs no longer use: older than their frontend entry's affinity
// timeout, or of an entry that no longer exists or has no affinity. It
// returns how many it removed.
func (o *Objects) ExpireAffinity() (int, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return o.expireAffinity(uint64(ts.Nano()))
}

// expireAffinity is ExpireAffinity at monotonic time now (ns).
func (o *Objects) expireAffinity(now uint64) (int, error) {
	timeouts := map[uint32]uint32{}
	if err := readAll(o.maps.AxonLbServices, func(_ podAxonLbKey, v podAxonLbService) { timeouts[v.Id] = v.AffinityTimeout }); err != nil {
		return 0, fmt.Errorf("list services: %w", err)
	}
	stale := func(k podAxonLbAffinityKey, v podAxonLbAffinity) bool {
		timeout := time.Duration(timeouts[k.ServiceId]) * time.Second
		return timeout == 0 || (now > v.LastUsed && time.Duration(now-v.LastUsed) > timeout)
	}
	var keys []podAxonLbAffinityKey
	if err := readAll(o.maps.AxonLbAffinity, func(k podAxonLbAffinityKey, v podAxonLbAffinity) {
		if stale(k, v) {
			keys = append(keys, k)
		}
	}); err != nil {
		return 0, fmt.Errorf("list session affinities: %w", err)
	}
	n := 0
	for _, k := range keys {
		// Read again just before: a client's new connection may have
		// refreshed it since. Gone meanwhile (the LRU evicted it):
		// nothing to do.
		var v podAxonLbAffinity
		if o.maps.AxonLbAffinity.Lookup(&k, &v) != nil || !stale(k, v) {
			continue
		}
		if o.maps.AxonLbAffinity.Delete(&k) == nil {
			n++
		}
	}
	return n, nil
}
