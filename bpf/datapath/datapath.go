package datapath

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the datapath loaded into the kernel: its three programs and six
// maps (endpoints and remote blocks per IP family, config, counters). It is
// safe for concurrent use; map updates are atomic per entry.
type Objects struct {
	objs datapathObjects
}

// Default map sizes (datapath.h), and the bounds of [LoadOptions].
const (
	DefaultEndpointMapMax = 65536 // AXON_MAX_ENDPOINTS
	DefaultRemoteMapMax   = 16384 // AXON_MAX_REMOTES
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
}

// maxEntries returns the map sizes the options set, by map name.
func (o LoadOptions) maxEntries() (map[string]uint32, error) {
	sizes := map[string]uint32{}
	for _, opt := range []struct {
		what string
		v    uint32
		maps []string
	}{
		{"endpoint map size", o.EndpointMapMax, []string{datapathMapAxonEndpoints, datapathMapAxonEndpoints6, datapathMapAxonDevices}},
		{"remote map size", o.RemoteMapMax, []string{datapathMapAxonRemote4, datapathMapAxonRemote6}},
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

// Load loads the datapath programs and maps. The maps are pinned by name
// under pinDir (a directory on bpffs, created if missing); maps already
// pinned there are reused, so a second Load with the same pinDir, in this
// process or after a restart, shares the endpoints, remote blocks, config
// and counters of the first.
//
// A pinned map of another size (opts, or another build's default) or with
// a value that this build extended by appending members is migrated: its
// entries are copied into a new map, which replaces the pin once the
// programs loaded; a failed Load leaves the pins as they were. The old
// programs keep the old maps until they are swapped for the returned ones
// (the loader does that per device). A pin that cannot be migrated without
// losing entries is refused with an error wrapping [ErrIncompatibleMap]
// that names the map and the reason.
//
// An empty pinDir loads private, unpinned maps (tests, benchmarks).
func Load(pinDir string, opts LoadOptions) (*Objects, error) {
	sizes, err := opts.maxEntries()
	if err != nil {
		return nil, err
	}
	spec, err := loadDatapath()
	if err != nil {
		return nil, err
	}
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	if pinDir != "" {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}
	maps, err := openMaps(pinDir, spec.Maps)
	if err != nil {
		return nil, fmt.Errorf("open datapath maps: %w", err)
	}
	// The programs hold their own references to the maps.
	defer maps.close()
	o := &Objects{}
	if err := spec.LoadAndAssign(&o.objs, &ebpf.CollectionOptions{MapReplacements: maps.maps}); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load datapath: %+v", verr)
		}
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := maps.commit(); err != nil {
		o.Close()
		return nil, fmt.Errorf("pin datapath maps: %w", err)
	}
	return o, nil
}

// Close releases the programs and maps held by this process. Pinned maps and
// attached (or pinned) links keep them alive in the kernel.
func (o *Objects) Close() error {
	return o.objs.Close()
}

// FromPod is axon_from_pod, for tcx ingress of pods' host-side veths.
func (o *Objects) FromPod() *ebpf.Program { return o.objs.AxonFromPod }

// FromOverlay is axon_from_overlay, for tcx ingress of axon_vxlan.
func (o *Objects) FromOverlay() *ebpf.Program { return o.objs.AxonFromOverlay }

// FromUnderlay is axon_from_underlay, for tcx ingress of the node's underlay
// device.
func (o *Objects) FromUnderlay() *ebpf.Program { return o.objs.AxonFromUnderlay }

// AttachFromPod attaches FromPod to tcx ingress of the interface ifindex
// (resolved in the network namespace of the calling thread). The caller owns
// the link: closing it detaches the program unless it was pinned.
func (o *Objects) AttachFromPod(ifindex int) (link.Link, error) {
	return attachIngress(o.objs.AxonFromPod, ifindex)
}

// AttachFromOverlay attaches FromOverlay to tcx ingress of ifindex; see
// [Objects.AttachFromPod].
func (o *Objects) AttachFromOverlay(ifindex int) (link.Link, error) {
	return attachIngress(o.objs.AxonFromOverlay, ifindex)
}

// AttachFromUnderlay attaches FromUnderlay to tcx ingress of ifindex; see
// [Objects.AttachFromPod].
func (o *Objects) AttachFromUnderlay(ifindex int) (link.Link, error) {
	return attachIngress(o.objs.AxonFromUnderlay, ifindex)
}

// ToOverlay is axon_to_overlay, for tcx egress of axon_vxlan.
func (o *Objects) ToOverlay() *ebpf.Program { return o.objs.AxonToOverlay }

// AttachToOverlay attaches axon_to_overlay to tcx egress of axon_vxlan
// (ifindex): it sets the tunnel endpoint of packets the node's stack routes
// into the overlay.
func (o *Objects) AttachToOverlay(ifindex int) (link.Link, error) {
	return attach(o.objs.AxonToOverlay, ifindex, ebpf.AttachTCXEgress)
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
