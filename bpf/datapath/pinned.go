package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// ErrIncompatibleMap: a pinned map cannot become this build's map without
// losing entries (another map type or key, a value layout that is not a
// prefix of this build's, more entries than the new size holds). It is
// wrapped with the map's name and the reason; test with errors.Is.
var ErrIncompatibleMap = errors.New("datapath: pinned map is incompatible with this build")

// Upgrading pinned maps
//
// A node keeps its maps pinned across agent restarts, and a restart may
// bring a build whose map differs from the pinned one: a larger (or
// smaller) max_entries from a flag, or a value with members appended
// (datapath.h: "Append, never reorder"). openMaps then creates the new map
// beside the pinned one, copies every entry into it (values zero-extended)
// and leaves the pin alone; only [openedMaps.commit], called once the new
// programs loaded, moves the pin to the new map. A start that fails before
// that leaves the old pins, and the programs running on them, untouched.
// commit moves the pins one at a time: a start that fails or dies among
// them leaves some maps migrated. The same build's next start reuses those
// and migrates the rest; an older build refuses those whose value grew.
//
// The old programs keep the old maps until the loader moves each device to
// the new programs (atomically per device: tcx link update, tc filter
// replace). Entries the old programs write between the copy and that swap
// stay in the old map: counters (axon_stats), so a few packets' counts may
// be lost, and the connection tracker (axon_ct), whose new flows must not
// be: a migrated axon_ct keeps its old map open, and
// [Objects.FinishMigration], called once every device runs the new
// programs, copies the entries the new map lacks. The agent writes every
// other map and is not running then.

// openedMaps are the maps a load uses: reused pins, and new maps that are
// pinned only on commit.
type openedMaps struct {
	maps    map[string]*ebpf.Map
	pending []pendingPin
	// created names the maps that had no pin (every map, without a pin
	// directory): they start empty.
	created map[string]bool
	// resync are the migrated maps the programs write into, with the
	// map each was copied from (see FinishMigration).
	resync []resyncMap
}

// resyncMap is a migrated map the old programs may still write into.
type resyncMap struct {
	name   string
	old, m *ebpf.Map
	plan   migration
}

// pendingPin is a new map to pin at path, replacing a pinned map of an
// older layout or size if there is one.
type pendingPin struct {
	path string
	m    *ebpf.Map
}

// openMaps opens every map of specs: under pinDir, a pinned map of the same
// shape is reused, a missing one is created, and one of another size or a
// compatibly grown value is migrated into a new map (see above). An
// incompatible pin fails with an error wrapping [ErrIncompatibleMap]. An
// empty pinDir creates private maps. The caller closes the result.
func openMaps(pinDir string, specs map[string]*ebpf.MapSpec) (_ *openedMaps, err error) {
	o := &openedMaps{maps: make(map[string]*ebpf.Map, len(specs)), created: map[string]bool{}}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	// Sorted, so an error names the same map on every run.
	names := make([]string, 0, len(specs))
	for name := range specs {
		names = append(names, name)
	}
	slices.Sort(names)
	if pinDir != "" {
		if err := removeTemporaryPins(pinDir); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		spec := specs[name].Copy()
		spec.Pinning = ebpf.PinNone
		if pinDir == "" {
			m, err := ebpf.NewMap(spec)
			if err != nil {
				return nil, fmt.Errorf("create map %s: %w", name, err)
			}
			o.maps[name] = m
			o.created[name] = true
			continue
		}
		path := filepath.Join(pinDir, name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			o.created[name] = true
		}
		m, fresh, rs, err := openPinned(path, spec)
		if err != nil {
			return nil, err
		}
		o.maps[name] = m
		if rs != nil {
			o.resync = append(o.resync, *rs)
		}
		if fresh {
			o.pending = append(o.pending, pendingPin{path: path, m: m})
		}
	}
	return o, nil
}

// tmpPinSuffix names the temporary pin commit moves over a map's pin
// (bpffs refuses names with a dot).
const tmpPinSuffix = "_migrated"

// removeTemporaryPins removes the temporary pins of a start that died
// between pinning a new map and renaming it over the old pin. Nothing else
// would: commit replaces one only when that map migrates again.
func removeTemporaryPins(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), tmpPinSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove leftover pin %s: %w", e.Name(), err)
		}
	}
	return nil
}

// openPinned returns the map pinned at path if it fits spec, or a new map
// holding its entries (fresh: it is not pinned yet). A migrated map the
// programs write into comes with rs, which holds the old map open.
func openPinned(path string, spec *ebpf.MapSpec) (m *ebpf.Map, fresh bool, rs *resyncMap, err error) {
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return nil, false, nil, fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		return m, true, nil, nil
	}
	if err != nil {
		return nil, false, nil, fmt.Errorf("open pinned map %s: %w", spec.Name, err)
	}
	plan, err := planMigration(old, spec)
	if err != nil {
		old.Close()
		return nil, false, nil, fmt.Errorf("map %s: %w", spec.Name, err)
	}
	if plan.reuse {
		return old, false, nil, nil
	}
	m, err = ebpf.NewMap(spec)
	if err != nil {
		old.Close()
		return nil, false, nil, fmt.Errorf("create map %s to migrate into: %w", spec.Name, err)
	}
	if err := plan.copy(old, m); err != nil {
		m.Close()
		old.Close()
		return nil, false, nil, fmt.Errorf("map %s: migrate entries: %w", spec.Name, err)
	}
	if !programStateMaps[spec.Name] {
		old.Close()
		return m, true, nil, nil
	}
	return m, true, &resyncMap{name: spec.Name, old: old, m: m, plan: plan}, nil
}

// commit pins the new maps, each in place of the pin it replaces. The new
// map is pinned beside it and renamed over it, so the path always names a
// map of the node's state, the old one or the new one.
func (o *openedMaps) commit() error {
	for _, p := range o.pending {
		// openMaps removed what a start that died here left.
		tmp := p.path + tmpPinSuffix
		if err := p.m.Pin(tmp); err != nil {
			return fmt.Errorf("pin %s: %w", filepath.Base(p.path), err)
		}
		if err := os.Rename(tmp, p.path); err != nil {
			_ = p.m.Unpin()
			return fmt.Errorf("replace pin %s: %w", filepath.Base(p.path), err)
		}
	}
	o.pending = nil
	return nil
}

// close releases this process's descriptors of the maps; pinned maps and
// loaded programs keep theirs.
func (o *openedMaps) close() {
	for _, m := range o.maps {
		m.Close()
	}
	for _, r := range o.resync {
		r.old.Close() // r.m is one of o.maps
	}
}

// takeResync hands the maps to copy again after the swap to the caller,
// each with descriptors of its own (close releases o's).
func (o *openedMaps) takeResync() (_ []resyncMap, err error) {
	var out []resyncMap
	defer func() {
		if err != nil {
			for _, r := range out {
				r.close()
			}
		}
	}()
	for _, r := range o.resync {
		c := resyncMap{name: r.name, plan: r.plan}
		if c.m, err = r.m.Clone(); err != nil {
			return nil, fmt.Errorf("map %s: %w", r.name, err)
		}
		if c.old, err = r.old.Clone(); err != nil {
			c.m.Close()
			return nil, fmt.Errorf("map %s: %w", r.name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// close releases both maps of one that takeResync returned.
func (r resyncMap) close() {
	r.old.Close()
	r.m.Close()
}
