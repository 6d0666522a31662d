package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// ErrInvalidDirection is returned for a [Direction] other than [Ingress] or
// [Egress].
var ErrInvalidDirection = errors.New("invalid direction")

// Direction is the tcx hook a probe counts on. The values are the keys of
// the counters map and must match the enum in bpf/src/probe.c.
type Direction uint32

const (
	Ingress Direction = 0
	Egress  Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	default:
		return fmt.Sprintf("Direction(%d)", uint32(d))
	}
}

func (d Direction) attachType() (ebpf.AttachType, error) {
	switch d {
	case Ingress:
		return ebpf.AttachTCXIngress, nil
	case Egress:
		return ebpf.AttachTCXEgress, nil
	default:
		return 0, fmt.Errorf("%w: %d", ErrInvalidDirection, uint32(d))
	}
}

// Counters are the packets and bytes a probe has seen, summed over CPUs.
// Bytes counts whole frames from the L2 header on (skb->len at tc).
type Counters struct {
	Packets uint64
	Bytes   uint64
}

// Probe is axon_probe loaded into the kernel with its counters map.
type Probe struct {
	dir  Direction
	objs probeObjects
}

// Load loads a probe that counts into the slot for dir. The direction is a
// load-time constant: a probe must be attached to the hook it was loaded for.
func Load(dir Direction, opts *ebpf.CollectionOptions) (*Probe, error) {
	if _, err := dir.attachType(); err != nil {
		return nil, err
	}
	spec, err := loadProbe()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[probeVarDirection].Set(uint32(dir)); err != nil {
		return nil, fmt.Errorf("set direction: %w", err)
	}
	p := &Probe{dir: dir}
	if err := spec.LoadAndAssign(&p.objs, opts); err != nil {
		return nil, fmt.Errorf("load probe: %w", err)
	}
	return p, nil
}

// Direction is the direction the probe was loaded for.
func (p *Probe) Direction() Direction { return p.dir }

// Program is the loaded axon_probe program.
func (p *Probe) Program() *ebpf.Program { return p.objs.AxonProbe }

// Attach attaches the probe to the tcx hook of its direction on the
// interface ifindex, appending it to the chain. The index is resolved in the
// network namespace of the calling thread: callers that work in another
// namespace must switch to it on a locked OS thread. Closing the link
// detaches the probe.
func (p *Probe) Attach(ifindex int) (link.Link, error) {
	at, err := p.dir.attachType()
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   p.objs.AxonProbe,
		Attach:    at,
	})
	if err != nil {
		return nil, fmt.Errorf("attach probe to ifindex %d %s: %w", ifindex, p.dir, err)
	}
	return l, nil
}

// Counters returns the probe's counters summed over all CPUs.
func (p *Probe) Counters() (Counters, error) {
	return p.read(p.dir)
}

func (p *Probe) read(dir Direction) (Counters, error) {
	var perCPU []probeCounter
	if err := p.objs.Counters.Lookup(uint32(dir), &perCPU); err != nil {
		return Counters{}, fmt.Errorf("read counters: %w", err)
	}
	var c Counters
	for _, v := range perCPU {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// Close unloads the probe. Links created by Attach stay attached until they
// are closed themselves.
func (p *Probe) Close() error {
	return p.objs.Close()
}
