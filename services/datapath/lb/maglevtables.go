package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/lb/maglev"
)

// maglevCacheMax bounds the tables maglevTables keeps (each 32 KiB).
const maglevCacheMax = 256

// maglevTables builds the Maglev tables of external frontends' entries
// and keeps the latest by backend set: frontends sharing their backends (a
// LoadBalancer address and its node port, several ports of one Service)
// and a resync reuse a table rather than build it again (milliseconds
// each).
type maglevTables struct {
	mu    sync.Mutex
	cache map[string][]uint16 // by maglevSet; indices of the set's sorted keys
}

func newMaglevTables() *maglevTables {
	return &maglevTables{cache: map[string][]uint16{}}
}

// maglevKey is a backend's Maglev key, e.g. "10.0.2.17:8080/TCP" or
// "[fd00::5]:53/UDP": the same on every node, which is what makes every
// node build the same table. Part of the wire format between nodes (see
// package maglev): never change it.
func maglevKey(ap netip.AddrPort, proto uint8) string {
	name := map[uint8]string{6: "TCP", 17: "UDP", 132: "SCTP"}[proto]
	if name == "" {
		name = fmt.Sprint(proto)
	}
	return ap.String() + "/" + name
}

// maglevFrontend says which entries pick by Maglev: external frontends,
// which clients outside the cluster reach through any node.
func maglevFrontend(t bpfmaps.LBType) bool {
	return t == bpfmaps.LBTypeNodePort || t == bpfmaps.LBTypeLoadBalancer || t == bpfmaps.LBTypeExternalIP
}

// table returns the Maglev table of active (an entry's active slots, a
// backend repeated for its weight) as slots of active: each position names
// the first slot of its backend. nil (random picks) without backends, or
// with more than a table can hold. A nil maglevTables builds none.
func (c *maglevTables) table(active []bpfmaps.LBBackend, proto uint8) []uint16 {
	if c == nil || len(active) == 0 {
		return nil
	}
	first := map[string]int{} // a backend's key: its first slot
	weight := map[string]uint32{}
	for i, b := range active {
		k := maglevKey(netip.AddrPortFrom(b.Addr, b.Port), proto)
		if _, ok := first[k]; !ok {
			first[k] = i
		}
		weight[k]++
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range first {
			if !yield(k) {
				return
			}
		}
	})
	var set strings.Builder
	backends := make([]maglev.Backend, len(keys))
	for i, k := range keys {
		backends[i] = maglev.Backend{Key: k, Weight: weight[k]}
		fmt.Fprintf(&set, "%s*%d,", k, weight[k])
	}
	c.mu.Lock()
	t, ok := c.cache[set.String()]
	c.mu.Unlock()
	if !ok {
		var err error
		if t, err = maglev.Table(backends, bpfmaps.MaglevTableSize); err != nil {
			return nil // too many backends for a table: random picks
		}
		c.mu.Lock()
		if len(c.cache) >= maglevCacheMax {
			clear(c.cache)
		}
		c.cache[set.String()] = t
		c.mu.Unlock()
	}
	out := make([]uint16, len(t))
	for i, j := range t {
		out[i] = uint16(first[keys[j]]) // < len(active) ≤ MaxSlots
	}
	return out
}
