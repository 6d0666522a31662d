package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the datapath loaded into the kernel: its three programs and six
// maps (endpoints and remote blocks per IP family, config, counters). It is
// safe for concurrent use; map updates are atomic per entry.
type Objects struct {
	objs datapathObjects
}

// Load loads the datapath programs and maps. The maps are pinned by name
// under pinDir (a directory on bpffs, created if missing); maps already
// pinned there are reused, so a second Load with the same pinDir, in this
// process or after a restart, shares the endpoints, remote blocks, config
// and counters of the first. A pinned map whose layout differs from this
// build's is refused with an error wrapping [ebpf.ErrMapIncompatible],
// except the counters: a build with other counters starts them again.
//
// An empty pinDir loads private, unpinned maps (tests, benchmarks).
func Load(pinDir string) (*Objects, error) {
	spec, err := loadDatapath()
	if err != nil {
		return nil, err
	}
	var opts ebpf.CollectionOptions
	if pinDir == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	} else {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		if err := dropStaleStats(pinDir, spec.Maps[datapathMapAxonStats]); err != nil {
			return nil, err
		}
		opts.Maps.PinPath = pinDir
	}
	o := &Objects{}
	if err := spec.LoadAndAssign(&o.objs, &opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load datapath: %+v", verr)
		}
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	return o, nil
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
