package datapath

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the datapath loaded into the kernel: the five packet programs
// of its three tc objects, the socket programs of the node's processes
// (sock.go), and the maps they share (endpoints and remote blocks per IP
// family, pods' devices, config, counters, service frontends and backends,
// the connection tracker). It is safe for concurrent
// use; map updates are atomic per entry.
type Objects struct {
	maps     podMaps
	pod      podPrograms
	overlay  overlayPrograms
	underlay underlayPrograms
	sock     sockPrograms
	// sockConfig and sockRev are the socket programs' own maps
	// (axon/sock.h), which the other objects do not declare.
	sockConfig, sockRev *ebpf.Map

	// lbMu orders the writers of service entries (and of the flag that
	// enables them) with each other and with Services, which reads
	// several maps.
	lbMu sync.Mutex
	// lbPorts are the gates of axon_lb_ports as written (under lbMu; nil
	// until read).
	lbPorts []uint32

	// refillReplyPorts: axon_ct_ports was created by Load, so the
	// programs it replaces may still add flows without opening their
	// gates; FinishMigration opens them.
	refillReplyPorts atomic.Bool

	// resync are the migrated maps FinishMigration copies again.
	resyncMu sync.Mutex
	resync   []resyncMap
}

// Default map sizes (datapath.h), and the bounds of [LoadOptions].
const (
	DefaultEndpointMapMax = 65536  // AXON_MAX_ENDPOINTS
	DefaultRemoteMapMax   = 16384  // AXON_MAX_REMOTES
	DefaultServiceMapMax  = 65536  // AXON_MAX_LB_SERVICES
	DefaultSlotMapMax     = 262144 // AXON_MAX_LB_SLOTS
	DefaultCTMapMax       = 262144 // AXON_MAX_CT
	// MaxMapMax bounds a resizable map: the endpoint maps preallocate
	// every entry, about 100 bytes each.
	MaxMapMax = 1 << 20
)

// ErrInvalidOption: a [LoadOptions] value out of bounds. Test with errors.Is.
var ErrInvalidOption = errors.New("datapath: invalid load option")

// LoadOptions size the maps a node may need larger (or smaller) than the
// build's defaults. Zero means the default. A size different from the
// pinned map's migrates the map on [Load].
type LoadOptions struct {
	// EndpointMapMax is the number of local pod addresses per family and
	// of pod devices: max_entries of axon_endpoints, axon_endpoints6 and
	// axon_devices.
	EndpointMapMax uint32
	// RemoteMapMax is the number of other nodes' pod blocks per family:
	// max_entries of axon_remote4 and axon_remote6.
	RemoteMapMax uint32
	// ServiceMapMax is the number of service frontend entries (a frontend
	// with a different policy inside the cluster has two): max_entries of
	// axon_lb_services and axon_lb_meta.
	ServiceMapMax uint32
	// SlotMapMax is the number of backend slots of all frontends
	// together (a frontend being switched holds its old and new slots for
	// a moment): max_entries of axon_lb_slots.
	SlotMapMax uint32
	// CTMapMax is the number of connection tracker entries, two per
	// translated flow: max_entries of axon_ct.
	CTMapMax uint32
}

// maxEntries returns the map sizes the options set, by map name.
func (o LoadOptions) maxEntries() (map[string]uint32, error) {
	sizes := map[string]uint32{}
	for _, opt := range []struct {
		what string
		v    uint32
		maps []string
	}{
		{"endpoint map size", o.EndpointMapMax, []string{podMapAxonEndpoints, podMapAxonEndpoints6, podMapAxonDevices}},
		{"remote map size", o.RemoteMapMax, []string{podMapAxonRemote4, podMapAxonRemote6}},
		{"service map size", o.ServiceMapMax, []string{podMapAxonLbServices, podMapAxonLbMeta}},
		{"service slot map size", o.SlotMapMax, []string{podMapAxonLbSlots}},
		{"connection tracker size", o.CTMapMax, []string{podMapAxonCt}},
	} {
		if opt.v == 0 {
			continue
		}
		if opt.v > MaxMapMax {
			return nil, fmt.Errorf("%w: %s %d exceeds %d", ErrInvalidOption, opt.what, opt.v, MaxMapMax)
		}
		for _, m := range opt.maps {
			sizes[m] = opt.v
		}
	}
	return sizes, nil
}

// Load loads the datapath's objects, each once, and the maps they share.
// The maps are pinned by name under pinDir (a directory on bpffs, created if
// missing); maps already pinned there are reused, so a second Load with the
// same pinDir, in this process or after a restart, shares the endpoints,
// remote blocks, config and counters of the first.
//
// A pinned map of another size (opts, or another build's default) or with
// a value that this build extended by appending members is migrated: its
// entries are copied into a new map, which replaces the pin once the
// programs loaded. A Load that fails before then leaves the pins as they
// were; the pins are then replaced one at a time, so a failure (or a crash)
// among them leaves some maps migrated and others not. A restart of the
// same build completes the upgrade; an older build refuses a map whose
// value this build extended ([ErrIncompatibleMap]). The old programs keep
// the old maps until they are swapped for the returned ones (the loader
// does that per device). A pin that cannot be migrated without losing
// entries is refused with an error wrapping [ErrIncompatibleMap] that
// names the map and the reason.
//
// An empty pinDir loads private, unpinned maps (tests, benchmarks).
func Load(pinDir string, opts LoadOptions) (_ *Objects, err error) {
	sizes, err := opts.maxEntries()
	if err != nil {
		return nil, err
	}
	specs, err := loadSpecs()
	if err != nil {
		return nil, err
	}
	// Every object declares the maps it uses; each object's declaration
	// must match the map its programs are given.
	for _, spec := range specs.all() {
		for name, n := range sizes {
			if m, ok := spec.Maps[name]; ok {
				m.MaxEntries = n
			}
		}
	}
	mapSpecs, err := sharedMapSpecs(specs)
	if err != nil {
		return nil, err
	}
	if pinDir != "" {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}
	opened, err := openMaps(pinDir, mapSpecs)
	if err != nil {
		return nil, fmt.Errorf("open datapath maps: %w", err)
	}
	// The objects and the programs take references of their own.
	defer opened.close()
	coll := &ebpf.Collection{Maps: make(map[string]*ebpf.Map, len(opened.maps))}
	// o.maps takes the maps it names from coll: coll closes what is left.
	defer coll.Close()
	for name, m := range opened.maps {
		if coll.Maps[name], err = m.Clone(); err != nil {
			return nil, fmt.Errorf("datapath map %s: %w", name, err)
		}
	}

	objs := &Objects{}
	defer func() {
		if err != nil {
			objs.Close()
		}
	}()
	if err := coll.Assign(&objs.maps); err != nil {
		objs.maps = podMaps{} // nothing was transferred: coll still owns them
		return nil, fmt.Errorf("assign datapath maps: %w", err)
	}
	for _, obj := range []struct {
		name string
		spec *ebpf.CollectionSpec
		to   any
	}{
		{"pod", specs.pod, &objs.pod},
		{"overlay", specs.overlay, &objs.overlay},
		{"underlay", specs.underlay, &objs.underlay},
		{"sock", specs.sock, &objs.sock},
	} {
		if err := loadPrograms(obj.spec, obj.to, opened.maps); err != nil {
			return nil, fmt.Errorf("load datapath %s object: %w", obj.name, err)
		}
	}
	if objs.sockConfig, err = opened.maps[sockMapAxonSockConfig].Clone(); err != nil {
		return nil, fmt.Errorf("datapath map %s: %w", sockMapAxonSockConfig, err)
	}
	if objs.sockRev, err = opened.maps[sockMapAxonSockRev].Clone(); err != nil {
		return nil, fmt.Errorf("datapath map %s: %w", sockMapAxonSockRev, err)
	}
	// Gates created beside existing state (an upgrade) are opened for it
	// before any program reads them.
	if opened.created[podMapAxonLbPorts] {
		if err := objs.fillFrontendPorts(); err != nil {
			return nil, err
		}
	}
	if opened.created[podMapAxonCtPorts] {
		if err := objs.fillReplyPorts(); err != nil {
			return nil, err
		}
		objs.refillReplyPorts.Store(pinDir != "")
	}
	if objs.resync, err = opened.takeResync(); err != nil {
		return nil, fmt.Errorf("keep migrated maps: %w", err)
	}
	if err := opened.commit(); err != nil {
		return nil, fmt.Errorf("pin datapath maps: %w", err)
	}
	return objs, nil
}

// FinishMigration completes the migration of the maps the programs write
// into (the connection tracker): the entries their old maps gained after
// [Load] copied them (flows the old programs created meanwhile) are copied
// into the new maps, unless the new ones hold them already. Call it once
// every device runs the new programs; then the old maps are released.
// Without a migration, or called again, it does nothing.
func (o *Objects) FinishMigration() error {
	o.resyncMu.Lock()
	rs := o.resync
	o.resync = nil
	o.resyncMu.Unlock()
	var errs []error
	if o.refillReplyPorts.Swap(false) {
		if err := o.fillReplyPorts(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range rs {
		if err := r.plan.copyMissing(r.old, r.m); err != nil {
			errs = append(errs, fmt.Errorf("map %s: copy entries written during the upgrade: %w", r.name, err))
		}
		r.close()
	}
	return errors.Join(errs...)
}

// objectSpecs are the datapath's objects, one per attach point.
type objectSpecs struct {
	pod, overlay, underlay, sock *ebpf.CollectionSpec
}

func (s objectSpecs) all() []*ebpf.CollectionSpec {
	return []*ebpf.CollectionSpec{s.pod, s.overlay, s.underlay, s.sock}
}

func loadSpecs() (objectSpecs, error) {
	var (
		s   objectSpecs
		err error
	)
	if s.pod, err = loadPod(); err != nil {
		return s, fmt.Errorf("datapath pod object: %w", err)
	}
	if s.overlay, err = loadOverlay(); err != nil {
		return s, fmt.Errorf("datapath overlay object: %w", err)
	}
	if s.underlay, err = loadUnderlay(); err != nil {
		return s, fmt.Errorf("datapath underlay object: %w", err)
	}
	if s.sock, err = loadSock(); err != nil {
		return s, fmt.Errorf("datapath sock object: %w", err)
	}
	return s, nil
}

// sharedMapSpecs is the union of the objects' maps. A map two objects
// declare differently is a build error: they could not share it.
func sharedMapSpecs(specs objectSpecs) (map[string]*ebpf.MapSpec, error) {
	union := make(map[string]*ebpf.MapSpec)
	for _, spec := range specs.all() {
		for name, m := range spec.Maps {
			prev, ok := union[name]
			if !ok {
				union[name] = m.Copy()
				continue
			}
			if prev.Type != m.Type || prev.KeySize != m.KeySize || prev.ValueSize != m.ValueSize ||
				prev.MaxEntries != m.MaxEntries || prev.Flags != m.Flags {
				return nil, fmt.Errorf("datapath objects declare map %s differently", name)
			}
		}
	}
	return union, nil
}

// loadPrograms loads the programs of one object into to (a *xxxPrograms),
// bound to the shared maps.
func loadPrograms(spec *ebpf.CollectionSpec, to any, shared map[string]*ebpf.Map) error {
	// Only the object's own maps: cilium/ebpf refuses replacements for
	// maps the spec does not declare.
	repl := make(map[string]*ebpf.Map, len(spec.Maps))
	for name := range spec.Maps {
		repl[name] = shared[name]
	}
	err := spec.LoadAndAssign(to, &ebpf.CollectionOptions{MapReplacements: repl})
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		// The error's text holds only the log's last line; the whole log
		// says why. Wrapped, so callers still find the VerifierError and
		// its cause.
		return fmt.Errorf("%w (verifier log:\n%+v)", err, verr)
	}
	return err
}

// Close releases the programs and maps held by this process. Pinned maps and
// attached (or pinned) links keep them alive in the kernel.
func (o *Objects) Close() error {
	o.resyncMu.Lock()
	for _, r := range o.resync {
		r.close()
	}
	o.resync = nil
	o.resyncMu.Unlock()
	var sockMaps []error
	for _, m := range []*ebpf.Map{o.sockConfig, o.sockRev} {
		if m != nil {
			sockMaps = append(sockMaps, m.Close())
		}
	}
	return errors.Join(o.pod.Close(), o.overlay.Close(), o.underlay.Close(), o.sock.Close(), o.maps.Close(), errors.Join(sockMaps...))
}

// FromPod is axon_from_pod (pod object), the tc filter for ingress of pods'
// host-side veths.
func (o *Objects) FromPod() *ebpf.Program { return o.pod.AxonFromPod }

// ToPod is axon_to_pod (pod object), the tc filter for egress of pods'
// host-side veths: it translates back the replies of service flows the
// kernel routes into a pod (a backend that is no pod).
func (o *Objects) ToPod() *ebpf.Program { return o.pod.AxonToPod }

// FromOverlay is axon_from_overlay (overlay object), for tcx ingress of
// axon_vxlan.
func (o *Objects) FromOverlay() *ebpf.Program { return o.overlay.AxonFromOverlay }

// FromUnderlay is axon_from_underlay (underlay object), for tcx ingress of
// the node's underlay device.
func (o *Objects) FromUnderlay() *ebpf.Program { return o.underlay.AxonFromUnderlay }

// ToOverlay is axon_to_overlay (overlay object), for tcx egress of
// axon_vxlan.
func (o *Objects) ToOverlay() *ebpf.Program { return o.overlay.AxonToOverlay }

// AttachFromPod attaches FromPod to tcx ingress of the interface ifindex
// (resolved in the network namespace of the calling thread). The node agent
// attaches it as a tc filter instead (services/datapath/loader); this is for
// tests and tools. The caller owns the link: closing it detaches the
// program unless it was pinned.
func (o *Objects) AttachFromPod(ifindex int) (link.Link, error) {
	return attachIngress(o.pod.AxonFromPod, ifindex)
}

// AttachToPod attaches ToPod to tcx egress of ifindex; see
// [Objects.AttachFromPod].
func (o *Objects) AttachToPod(ifindex int) (link.Link, error) {
	return attach(o.pod.AxonToPod, ifindex, ebpf.AttachTCXEgress)
}

// AttachFromOverlay attaches FromOverlay to tcx ingress of ifindex; see
// [Objects.AttachFromPod].
func (o *Objects) AttachFromOverlay(ifindex int) (link.Link, error) {
	return attachIngress(o.overlay.AxonFromOverlay, ifindex)
}

// AttachFromUnderlay attaches FromUnderlay to tcx ingress of ifindex; see
// [Objects.AttachFromPod].
func (o *Objects) AttachFromUnderlay(ifindex int) (link.Link, error) {
	return attachIngress(o.underlay.AxonFromUnderlay, ifindex)
}

// AttachToOverlay attaches axon_to_overlay to tcx egress of axon_vxlan
// (ifindex): it sets the tunnel endpoint of packets the node's stack routes
// into the overlay.
func (o *Objects) AttachToOverlay(ifindex int) (link.Link, error) {
	return attach(o.overlay.AxonToOverlay, ifindex, ebpf.AttachTCXEgress)
}

func attachIngress(prog *ebpf.Program, ifindex int) (link.Link, error) {
	return attach(prog, ifindex, ebpf.AttachTCXIngress)
}

func attach(prog *ebpf.Program, ifindex int, at ebpf.AttachType) (link.Link, error) {
	if ifindex <= 0 {
		return nil, fmt.Errorf("%w: %d", ErrInvalidIfindex, ifindex)
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    at,
	})
	if err != nil {
		return nil, fmt.Errorf("attach %s to tcx %s of ifindex %d: %w", prog, at, ifindex, err)
	}
	return l, nil
}
