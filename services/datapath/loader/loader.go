// Package loader is the node agent's eBPF side: it loads the datapath
// programs once, keeps their maps pinned under the node's bpffs directory,
// attaches the programs to the node's devices with pinned tcx links, to
// pods' host-side veths with tc filters and to the cgroup v2 root with
// pinned cgroup links (sock.go; either way traffic flows while the agent
// restarts), and writes per-endpoint and per-block entries. It is the
// real bpfmaps.Datapath, and the real bpfmaps.LBMaps (service frontends,
// their backends and the connection tracker).
package loader

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// Loader owns the node's eBPF objects and links.
type Loader struct {
	objs    *bpfdp.Objects
	linkDir string
	nl      *netlink.Handle // in the node's namespace

	mu    sync.Mutex
	links map[string]link.Link // by name: overlay-in/-out
}

var _ bpfmaps.Datapath = (*Loader)(nil)

// Open mounts bpffs if needed, loads the programs with their maps pinned
// under pinDir (reusing pins of an earlier run, migrating those of another
// size or an older layout; see [bpfdp.Load]), and moves every attachment of
// an earlier run to the freshly loaded programs, device by device: each
// device goes from the old programs and maps to the new ones atomically, so
// established connections keep flowing.
//
// The pins move to the new maps inside [bpfdp.Load], before the devices
// move. An Open that fails after that, or a Load that fails while moving
// the pins (one at a time), leaves the pins migrated, all or some, while
// the devices still run the old programs on the old maps. A restart of the
// same build completes the upgrade; a downgrade to a build with the older
// value layout is refused with [bpfdp.ErrIncompatibleMap].
func Open(pinDir string, opts bpfdp.LoadOptions) (*Loader, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := ensureBPFFS(filepath.Dir(pinDir)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(pinDir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	objs, err := bpfdp.Load(pinDir, opts)
	if err != nil {
		return nil, fmt.Errorf("load eBPF datapath: %w", err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	l := &Loader{objs: objs, linkDir: filepath.Join(pinDir, "links"), nl: nl, links: map[string]link.Link{}}
	if err := l.adoptLinks(); err != nil {
		_ = l.Close()
		return nil, err
	}
	if err := l.adoptEndpoints(); err != nil {
		_ = l.Close()
		return nil, err
	}
	// Every device runs the new programs: what the old ones added to a
	// migrated connection tracker meanwhile moves over too.
	if err := objs.FinishMigration(); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("finish map migration: %w", err)
	}
	return l, nil
}

// adoptLinks moves the pinned links of an earlier run to the freshly loaded
// programs. A link whose device is gone is dropped (the agent attaches
// again when it sets the device up). A pod's tcx link, pinned by builds
// before pods got tc filters, is replaced by a filter first, so the pod
// never runs without its program.
func (l *Loader) adoptLinks() error {
	entries, err := os.ReadDir(l.linkDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(l.linkDir, e.Name())
		pl, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			_ = os.Remove(path)
			continue
		}
		prog := l.programFor(e.Name())
		if prog == nil {
			prog = l.socketProgram(e.Name())
		}
		if prog == nil {
			if err := l.replaceEndpointLink(pl); err != nil {
				_ = pl.Close()
				return fmt.Errorf("move %s to a tc filter: %w", e.Name(), err)
			}
			continue
		}
		if err := pl.Update(prog); err != nil {
			if errors.Is(err, unix.ENOLINK) { // the device (or cgroup) was removed
				_ = pl.Unpin()
				_ = pl.Close()
				continue
			}
			_ = pl.Close()
			return fmt.Errorf("move link %s to the new program: %w", e.Name(), err)
		}
		l.links[e.Name()] = pl
	}
	return nil
}

// replaceEndpointLink puts the pod programs as filters on the device of an
// old pod's tcx link, then removes the link.
func (l *Loader) replaceEndpointLink(pl link.Link) error {
	if info, err := pl.Info(); err == nil {
		if tcx := info.TCX(); tcx != nil && tcx.Ifindex != 0 {
			if err := l.attachFilters(int(tcx.Ifindex)); err != nil && !errors.Is(err, unix.ENODEV) {
				return err
			}
		}
	}
	_ = pl.Unpin()
	return pl.Close()
}

const (
	overlayIn  = "overlay-ingress"
	overlayOut = "overlay-egress"
	underlayIn = "underlay-ingress"
)

func (l *Loader) programFor(name string) *ebpf.Program {
	switch name {
	case overlayIn:
		return l.objs.FromOverlay()
	case underlayIn:
		return l.objs.FromUnderlay()
	case overlayOut:
		return l.objs.ToOverlay()
	default:
		return nil
	}
}

// ensureBPFFS mounts bpffs on dir's mount point (/sys/fs/bpf) if it is not.
func ensureBPFFS(dir string) error {
	root := "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return os.MkdirAll(dir, 0o700)
	}
	if err := unix.Mount("bpf", root, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", root, err)
	}
	return os.MkdirAll(dir, 0o700)
}

// Close releases the objects; pinned links and maps keep working.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.links {
		_ = ln.Close()
	}
	l.nl.Close()
	return l.objs.Close()
}

// Configure sets the routing mode: through the tunnel device (VXLAN, or
// Geneve), or native routing; the node's underlay IPv4 (the tunnel
// source; invalid lets the kernel pick); and the node's addresses (node
// ports).
func (l *Loader) Configure(c bpfmaps.Config) error {
	// ModeNone would leave every packet to the node's stack: the agent
	// always picks a mode, so the zero value is a bug.
	if c.Mode == bpfdp.ModeNone {
		return fmt.Errorf("configure the datapath: no routing mode: %w", bpfdp.ErrInvalidMode)
	}
	bc := bpfdp.Config{Mode: c.Mode, NodeIP: c.NodeIP}
	if c.Mode == bpfmaps.ModeTunnel {
		bc.VXLANIfindex, bc.Geneve = c.TunnelIfindex, c.Geneve
	}
	if err := l.objs.SetConfig(bc); err != nil {
		return fmt.Errorf("configure the datapath: %w", err)
	}
	if err := l.objs.SetNodeAddrs(c.NodeAddrs); err != nil {
		return fmt.Errorf("configure the datapath: %w", err)
	}
	return nil
}

// attach attaches under name, replacing an earlier link of that name on
// another interface, and pins it.
func (l *Loader) attach(name string, ifindex int, fn func(int) (link.Link, error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.links[name]; ok {
		if info, err := old.Info(); err == nil {
			if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == ifindex {
				return nil // already attached (a restart reloaded it)
			}
		}
		_ = old.Unpin()
		_ = old.Close()
		delete(l.links, name)
	}
	ln, err := fn(ifindex)
	if err != nil {
		return err
	}
	if err := ln.Pin(filepath.Join(l.linkDir, name)); err != nil {
		_ = ln.Close()
		return fmt.Errorf("pin link %s: %w", name, err)
	}
	l.links[name] = ln
	return nil
}

// AttachUnderlay attaches the delivery program to the ingress of the node's
// underlay device: packets from other nodes for its pods go straight to
// them (decapsulated there in tunnel mode).
func (l *Loader) AttachUnderlay(ifindex int) error {
	return l.attach(underlayIn, ifindex, l.objs.AttachFromUnderlay)
}

// AttachOverlay attaches the overlay programs to axon_vxlan.
func (l *Loader) AttachOverlay(ifindex int) error {
	if err := l.attach(overlayIn, ifindex, l.objs.AttachFromOverlay); err != nil {
		return err
	}
	return l.attach(overlayOut, ifindex, l.objs.AttachToOverlay)
}

// PutEndpoint writes a pod address's map entry (either family).
func (l *Loader) PutEndpoint(ip netip.Addr, ep bpfmaps.Endpoint) error {
	return l.objs.PutEndpoint(ip, bpfdp.Endpoint{Ifindex: ep.Ifindex, ID: ep.ID, PodMAC: ep.PodMAC, HostMAC: ep.HostMAC})
}

// Endpoint returns a pod address's entry.
func (l *Loader) Endpoint(ip netip.Addr) (bpfmaps.Endpoint, error) {
	ep, err := l.objs.Endpoint(ip)
	if err != nil {
		return bpfmaps.Endpoint{}, err
	}
	return bpfmaps.Endpoint{Ifindex: ep.Ifindex, ID: ep.ID, PodMAC: ep.PodMAC, HostMAC: ep.HostMAC}, nil
}

// DeleteEndpoint removes a pod address's entry; a missing one is success.
func (l *Loader) DeleteEndpoint(ip netip.Addr) error {
	return l.objs.DeleteEndpoint(ip)
}

// PutDevice records a pod's host-side veth and the pod it belongs to.
func (l *Loader) PutDevice(ifindex int, pod uint32) error { return l.objs.PutDevice(ifindex, pod) }

// DeleteDevice forgets a pod's host-side veth.
func (l *Loader) DeleteDevice(ifindex int) error { return l.objs.DeleteDevice(ifindex) }

// Device returns the pod key recorded for a host-side veth.
func (l *Loader) Device(ifindex int) (uint32, error) { return l.objs.Device(ifindex) }

// EndpointAddrs lists the pod addresses that have endpoint map entries.
func (l *Loader) EndpointAddrs() ([]netip.Addr, error) {
	eps, err := l.objs.Endpoints()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(eps))
	for ip := range eps {
		out = append(out, ip)
	}
	return out, nil
}

// RemoteBlocks lists the blocks in the remote maps with their node address.
func (l *Loader) RemoteBlocks() (map[netip.Prefix]netip.Addr, error) {
	return l.objs.Remotes()
}

// PutRemote routes another node's block (either family) through the
// overlay to the node's IPv4 underlay address.
func (l *Loader) PutRemote(block netip.Prefix, nodeIP netip.Addr) error {
	return l.objs.PutRemote(block, nodeIP)
}

// DeleteRemote removes a block's tunnel entry; a missing one is success.
func (l *Loader) DeleteRemote(block netip.Prefix) error {
	return l.objs.DeleteRemote(block)
}

// Stats returns the datapath's packet counters by name.
func (l *Loader) Stats() (map[string]uint64, error) {
	s, err := l.objs.Stats()
	if err != nil {
		return nil, err
	}
	return s.Map(), nil
}

var _ bpfmaps.LBMaps = (*Loader)(nil)

func lbFrontend(k bpfmaps.LBKey) bpfdp.Frontend {
	return bpfdp.Frontend{Addr: k.Addr, Port: k.Port, Proto: k.Proto, Scope: bpfdp.Scope(k.Scope)}
}

func lbBackends(bs []bpfmaps.LBBackend) []bpfdp.Backend {
	out := make([]bpfdp.Backend, len(bs))
	for i, b := range bs {
		out[i] = bpfdp.Backend{Addr: b.Addr, Port: b.Port, Local: b.Local}
	}
	return out
}

func lbBackendsFrom(bs []bpfdp.Backend) []bpfmaps.LBBackend {
	if len(bs) == 0 {
		return nil
	}
	out := make([]bpfmaps.LBBackend, len(bs))
	for i, b := range bs {
		out[i] = bpfmaps.LBBackend{Addr: b.Addr, Port: b.Port, Local: b.Local}
	}
	return out
}

// affinitySeconds is the map's form of an affinity timeout: whole seconds,
// a positive timeout at least one.
func affinitySeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, math.MaxUint32))
}

// PutServices writes frontend entries in order, each switched in whole
// (see [bpfdp.Objects.PutServices]).
func (l *Loader) PutServices(entries []bpfmaps.LBEntry) error {
	out := make([]bpfdp.ServiceEntry, len(entries))
	for i, e := range entries {
		out[i] = bpfdp.ServiceEntry{Frontend: lbFrontend(e.Key), Service: bpfdp.Service{
			ID:              e.Service.ID,
			Type:            uint8(e.Service.Type),
			Active:          lbBackends(e.Service.Active),
			Terminating:     lbBackends(e.Service.Terminating),
			AffinityTimeout: affinitySeconds(e.Service.Affinity),
			Meta:            e.Service.Meta,
			SourceRanges:    e.Service.SourceRanges,
			Maglev:          e.Service.Maglev,
		}}
	}
	return l.objs.PutServices(out)
}

// DeleteServices removes frontends; missing ones are skipped.
func (l *Loader) DeleteServices(keys []bpfmaps.LBKey) error {
	out := make([]bpfdp.Frontend, len(keys))
	for i, k := range keys {
		out[i] = lbFrontend(k)
	}
	return l.objs.DeleteServices(out)
}

// Services reads every frontend entry back.
func (l *Loader) Services() ([]bpfmaps.LBEntry, error) {
	entries, err := l.objs.Services()
	if err != nil {
		return nil, err
	}
	out := make([]bpfmaps.LBEntry, len(entries))
	for i, e := range entries {
		out[i] = bpfmaps.LBEntry{
			Key: bpfmaps.LBKey{Addr: e.Frontend.Addr, Port: e.Frontend.Port, Proto: e.Frontend.Proto, Scope: bpfmaps.LBScope(e.Frontend.Scope)},
			Service: bpfmaps.LBService{
				ID:           e.Service.ID,
				Type:         bpfmaps.LBType(e.Service.Type),
				Active:       lbBackendsFrom(e.Service.Active),
				Terminating:  lbBackendsFrom(e.Service.Terminating),
				Affinity:     time.Duration(e.Service.AffinityTimeout) * time.Second,
				Meta:         e.Service.Meta,
				SourceRanges: e.Service.SourceRanges,
				Maglev:       e.Service.Maglev,
			},
		}
	}
	return out, nil
}

// DeleteFlows removes both directions of the translated flows match
// selects and returns how many it removed.
func (l *Loader) DeleteFlows(match func(bpfmaps.Flow) bool) (int, error) {
	return l.objs.DeleteFlows(func(f bpfdp.Flow) bool {
		return match(bpfmaps.Flow{ServiceID: f.ServiceID, Proto: f.Proto, Client: f.Client, Frontend: f.Frontend, Backend: f.Backend})
	})
}

// UnpinFlows removes the client's direction of the translated flows match
// selects and returns how many it unpinned.
func (l *Loader) UnpinFlows(match func(bpfmaps.Flow) bool) (int, error) {
	return l.objs.UnpinFlows(func(f bpfdp.Flow) bool {
		return match(bpfmaps.Flow{ServiceID: f.ServiceID, Proto: f.Proto, Client: f.Client, Frontend: f.Frontend, Backend: f.Backend})
	})
}

// ExpireFlows removes idle flows (the datapath's timeouts) and returns how
// many it removed. It also forgets the session affinity of clients past
// their frontend's timeout.
func (l *Loader) ExpireFlows() (int, error) {
	n, err := l.objs.ExpireFlows()
	if _, aerr := l.objs.ExpireAffinity(); aerr != nil {
		err = errors.Join(err, aerr)
	}
	return n, err
}

// Usage reports how full every datapath map is.
func (l *Loader) Usage() ([]bpfmaps.MapUsage, error) {
	us, err := l.objs.Usage()
	if err != nil {
		return nil, err
	}
	out := make([]bpfmaps.MapUsage, len(us))
	for i, u := range us {
		out[i] = bpfmaps.MapUsage{Name: u.Name, Entries: u.Entries, Capacity: u.Capacity}
	}
	return out, nil
}
