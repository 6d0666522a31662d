package bpffake

import (
	"fmt"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// Configure writes the node configuration: a valid mode, the tunnel
// device in tunnel mode, an IPv4 unicast node address if any.
func (f *Fake) Configure(c bpfmaps.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpConfigure); err != nil {
		return err
	}
	switch c.Mode {
	case bpfmaps.ModeNative:
	case bpfmaps.ModeTunnel:
		if err := checkIfindex(c.TunnelIfindex); err != nil {
			return fmt.Errorf("tunnel mode needs the tunnel device: %w", err)
		}
	default:
		return fmt.Errorf("%w: %d", bpfdp.ErrInvalidMode, c.Mode)
	}
	if c.NodeIP.IsValid() {
		ip, err := unicast4(c.NodeIP)
		if err != nil {
			return fmt.Errorf("node address: %w", err)
		}
		c.NodeIP = ip
	}
	f.config = &c
	return nil
}

// AttachEndpoint puts the pod program on ifindex.
func (f *Fake) AttachEndpoint(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpAttachEndpoint); err != nil {
		return err
	}
	if ifindex <= 0 {
		return fmt.Errorf("attach to ifindex %d: not an interface", ifindex)
	}
	if !f.exists(ifindex) {
		return fmt.Errorf("attach to ifindex %d: %w", ifindex, unix.ENODEV)
	}
	f.progs[ifindex] = true
	return nil
}

// IsEndpointDevice reports whether ifindex carries the pod program.
func (f *Fake) IsEndpointDevice(ifindex int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[OpIsEndpointDevice]++
	return f.progs[ifindex] && f.exists(ifindex)
}

// EndpointProgramProblems describes what is missing on hostName: the
// device (by the SetInterfaces lookup) or its program.
func (f *Fake) EndpointProgramProblems(hostName string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, ok := 0, false
	if f.links != nil {
		idx, ok = f.links()[hostName]
	}
	switch {
	case !ok:
		return []string{fmt.Sprintf("no device %s", hostName)}
	case !f.progs[idx]:
		return []string{fmt.Sprintf("no program attached to %s", hostName)}
	}
	return nil
}

// AttachOverlay attaches the overlay programs to the tunnel device.
func (f *Fake) AttachOverlay(ifindex int) error {
	return f.attachNode(OpAttachOverlay, ifindex, &f.overlay)
}

// AttachUnderlay attaches the delivery program to the underlay device.
func (f *Fake) AttachUnderlay(ifindex int) error {
	return f.attachNode(OpAttachUnderlay, ifindex, &f.underlay)
}

func (f *Fake) attachNode(op string, ifindex int, to *int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(op); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return fmt.Errorf("attach to ifindex %d: %w", ifindex, err)
	}
	*to = ifindex
	return nil
}

// AttachSocketLB records that the socket programs are attached.
func (f *Fake) AttachSocketLB() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpAttachSocketLB); err != nil {
		return err
	}
	f.socketLB = true
	return nil
}

// SocketLB reports whether AttachSocketLB succeeded.
func (f *Fake) SocketLB() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.socketLB
}
