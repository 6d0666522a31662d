package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// openMaps creates the datapath's maps, one per spec, keyed by name: every
// object's programs are then loaded against these, so all share one set.
// With a pinDir, each map is pinned by name under it and a compatible pin
// is reused; an incompatible one is refused (an error wrapping
// [ebpf.ErrMapIncompatible]), except axon_stats, which is replaced. An
// empty pinDir gives private, unpinned maps. On error no map is left open.
func openMaps(pinDir string, specs map[string]*ebpf.MapSpec) (_ map[string]*ebpf.Map, err error) {
	var opts ebpf.MapOptions
	if pinDir != "" {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		if stats, ok := specs[podMapAxonStats]; ok {
			if err := dropStaleStats(pinDir, stats); err != nil {
				return nil, err
			}
		}
		opts.PinPath = pinDir
	}
	out := make(map[string]*ebpf.Map, len(specs))
	defer func() {
		if err != nil {
			for _, m := range out {
				m.Close()
			}
		}
	}()
	for name, spec := range specs {
		spec = spec.Copy()
		if pinDir == "" {
			spec.Pinning = ebpf.PinNone
		}
		m, err := ebpf.NewMapWithOptions(spec, opts)
		if err != nil {
			return nil, fmt.Errorf("open datapath map %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// dropStaleStats removes a pinned axon_stats whose size differs from
// want's: a build with other counters. The counters are statistics, not
// state, so unlike the other maps they start again from zero rather than
// making the load fail.
func dropStaleStats(pinDir string, want *ebpf.MapSpec) error {
	path := filepath.Join(pinDir, want.Name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned %s: %w", want.Name, err)
	}
	defer m.Close()
	if m.MaxEntries() == want.MaxEntries {
		return nil
	}
	if err := m.Unpin(); err != nil {
		return fmt.Errorf("replace pinned %s of %d counters: %w", want.Name, m.MaxEntries(), err)
	}
	return nil
}
