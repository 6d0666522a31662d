package bpffake

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// PutEndpoint writes a pod address's entry.
func (f *Fake) PutEndpoint(ip netip.Addr, ep bpfmaps.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutEndpoint); err != nil {
		return err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return err
	}
	if err := checkIfindex(ep.Ifindex); err != nil {
		return err
	}
	if err := checkMAC(ep.PodMAC, "pod MAC"); err != nil {
		return err
	}
	if err := checkMAC(ep.HostMAC, "host MAC"); err != nil {
		return err
	}
	if full(f, f.endpoints, ip) {
		return fmt.Errorf("put endpoint %s: %w", ip, unix.E2BIG)
	}
	f.endpoints[ip] = cloneEndpoint(ep)
	return nil
}

// DeleteEndpoint removes a pod address's entry; a missing one is success.
func (f *Fake) DeleteEndpoint(ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteEndpoint); err != nil {
		return err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return err
	}
	delete(f.endpoints, ip)
	return nil
}

// Endpoint returns a pod address's entry; an error wrapping
// bpfdp.ErrNotFound when it has none.
func (f *Fake) Endpoint(ip netip.Addr) (bpfmaps.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpEndpoint); err != nil {
		return bpfmaps.Endpoint{}, err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return bpfmaps.Endpoint{}, err
	}
	ep, ok := f.endpoints[ip]
	if !ok {
		return bpfmaps.Endpoint{}, fmt.Errorf("endpoint %s: %w", ip, bpfdp.ErrNotFound)
	}
	return cloneEndpoint(ep), nil
}

// EndpointAddrs lists the addresses with entries, sorted.
func (f *Fake) EndpointAddrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpEndpointAddrs); err != nil {
		return nil, err
	}
	return slices.SortedFunc(maps.Keys(f.endpoints), netip.Addr.Compare), nil
}

// PutDevice records which pod a host-side veth belongs to.
func (f *Fake) PutDevice(ifindex int, pod uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutDevice); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return err
	}
	if full(f, f.devices, ifindex) {
		return fmt.Errorf("put device %d: %w", ifindex, unix.E2BIG)
	}
	f.devices[ifindex] = pod
	return nil
}

// Device returns the pod key of a host-side veth, or an error wrapping
// the real maps' ErrNotFound.
func (f *Fake) Device(ifindex int) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDevice); err != nil {
		return 0, err
	}
	if err := checkIfindex(ifindex); err != nil {
		return 0, err
	}
	pod, ok := f.devices[ifindex]
	if !ok {
		return 0, fmt.Errorf("device %d: %w", ifindex, bpfdp.ErrNotFound)
	}
	return pod, nil
}

// DeleteDevice forgets a host-side veth; a missing one is success.
func (f *Fake) DeleteDevice(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteDevice); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return err
	}
	delete(f.devices, ifindex)
	return nil
}

// PutRemote routes another node's block to its IPv4 underlay address.
func (f *Fake) PutRemote(block netip.Prefix, nodeIP netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutRemote); err != nil {
		return err
	}
	block, err := blockPrefix(block)
	if err != nil {
		return err
	}
	if nodeIP, err = unicast4(nodeIP); err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if full(f, f.remotes, block) {
		return fmt.Errorf("put remote %s: %w", block, unix.E2BIG)
	}
	f.remotes[block] = nodeIP
	return nil
}

// DeleteRemote forgets a remote block; a missing one is success.
func (f *Fake) DeleteRemote(block netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteRemote); err != nil {
		return err
	}
	block, err := blockPrefix(block)
	if err != nil {
		return err
	}
	delete(f.remotes, block)
	return nil
}

// RemoteBlocks lists the remote blocks and their nodes.
func (f *Fake) RemoteBlocks() (map[netip.Prefix]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpRemoteBlocks); err != nil {
		return nil, err
	}
	return maps.Clone(f.remotes), nil
}
