package datapath

import (
	"errors"

	"github.com/cilium/ebpf"
)

// readBatch is how many entries readAll reads per syscall.
const readBatch = 4096

// readAll calls fn with every entry of the hash map m, read in batches
// (a few syscalls for the whole map instead of two per entry).
func readAll[K, V any](m *ebpf.Map, fn func(K, V)) error {
	var cursor ebpf.MapBatchCursor
	keys, vals := make([]K, readBatch), make([]V, readBatch)
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
