package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Endpoint is a pod on this node (an axon_endpoints value).
type Endpoint struct {
	// Ifindex is the host-side veth's index in the node's namespace: the
	// programs redirect to its peer, the pod's interface.
	Ifindex  int
	ID       uint32
	PodMAC   net.HardwareAddr // MAC of the pod-side interface
	HostMAC  net.HardwareAddr // MAC of the host-side veth (the pod's router)
	Identity uint32           // security identity, for policy later
}

// endpointMap returns the endpoint map of ip's family and the key of ip in
// it (*podAxonEndpointKey or *podAxonEndpointKey6).
func (o *Objects) endpointMap(ip netip.Addr) (*ebpf.Map, any, error) {
	ip, err := podAddr(ip)
	if err != nil {
		return nil, nil, err
	}
	if ip.Is4() {
		k := endpointKey4(ip)
		return o.maps.AxonEndpoints, &k, nil
	}
	k := endpointKey6(ip)
	return o.maps.AxonEndpoints6, &k, nil
}

// endpointKey4 and endpointKey6 take addresses podAddr accepted.
func endpointKey4(ip netip.Addr) podAxonEndpointKey {
	b := ip.As4()
	return podAxonEndpointKey{Ip4: binary.NativeEndian.Uint32(b[:])}
}

func endpointKey6(ip netip.Addr) podAxonEndpointKey6 {
	return podAxonEndpointKey6{Ip6: ip.As16()}
}

// PutEndpoint adds or replaces the endpoint with address ip (IPv4 or IPv6;
// a dual-stack pod has one entry per address).
func (o *Objects) PutEndpoint(ip netip.Addr, ep Endpoint) error {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return err
	}
	var v podAxonEndpoint
	if v.Ifindex, err = ifindex(ep.Ifindex); err != nil {
		return err
	}
	if v.PodMac, err = mac(ep.PodMAC, "pod MAC"); err != nil {
		return err
	}
	if v.HostMac, err = mac(ep.HostMAC, "host MAC"); err != nil {
		return err
	}
	v.Id = ep.ID
	v.Identity = ep.Identity
	if err := m.Put(key, &v); err != nil {
		return fmt.Errorf("put endpoint %s: %w", ip, err)
	}
	return nil
}

// PutDevice records that the host-side veth dev (an ifindex) belongs to the pod
// with key pod (the same for all of a pod's attachments, different for
// every other pod): the pod may send any of its addresses out of any of
// its veths.
func (o *Objects) PutDevice(dev int, pod uint32) error {
	idx, err := ifindex(dev)
	if err != nil {
		return err
	}
	if err := o.maps.AxonDevices.Put(&idx, &pod); err != nil {
		return fmt.Errorf("put device %d: %w", dev, err)
	}
	return nil
}

// DeleteDevice forgets a host-side veth; a missing one is not an error.
func (o *Objects) DeleteDevice(dev int) error {
	idx, err := ifindex(dev)
	if err != nil {
		return err
	}
	if err := o.maps.AxonDevices.Delete(&idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete device %d: %w", dev, err)
	}
	return nil
}

// Device returns the pod key recorded for the host-side veth dev, or an
// error wrapping ErrNotFound.
func (o *Objects) Device(dev int) (uint32, error) {
	idx, err := ifindex(dev)
	if err != nil {
		return 0, err
	}
	var pod uint32
	if err := o.maps.AxonDevices.Lookup(&idx, &pod); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("device %d: %w", dev, ErrNotFound)
		}
		return 0, fmt.Errorf("look up device %d: %w", dev, err)
	}
	return pod, nil
}

// DeleteEndpoint removes the endpoint with address ip. Deleting an endpoint
// that does not exist is not an error.
func (o *Objects) DeleteEndpoint(ip netip.Addr) error {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return err
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint %s: %w", ip, err)
	}
	return nil
}

// Endpoint returns the endpoint with address ip, or an error wrapping
// ErrNotFound.
func (o *Objects) Endpoint(ip netip.Addr) (Endpoint, error) {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return Endpoint{}, err
	}
	var v podAxonEndpoint
	if err := m.Lookup(key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Endpoint{}, fmt.Errorf("endpoint %s: %w", ip, ErrNotFound)
		}
		return Endpoint{}, fmt.Errorf("look up endpoint %s: %w", ip, err)
	}
	return endpointFrom(v), nil
}

// Endpoints returns every endpoint in the maps, IPv4 and IPv6, for
// reconciliation.
func (o *Objects) Endpoints() (map[netip.Addr]Endpoint, error) {
	eps := make(map[netip.Addr]Endpoint)
	var (
		k4 podAxonEndpointKey
		k6 podAxonEndpointKey6
		v  podAxonEndpoint
	)
	it := o.maps.AxonEndpoints.Iterate()
	for it.Next(&k4, &v) {
		eps[addr4(k4.Ip4)] = endpointFrom(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	it = o.maps.AxonEndpoints6.Iterate()
	for it.Next(&k6, &v) {
		eps[netip.AddrFrom16(k6.Ip6)] = endpointFrom(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv6 endpoints: %w", err)
	}
	return eps, nil
}

func endpointFrom(v podAxonEndpoint) Endpoint {
	return Endpoint{
		Ifindex:  int(v.Ifindex),
		ID:       v.Id,
		PodMAC:   net.HardwareAddr(v.PodMac[:]),
		HostMAC:  net.HardwareAddr(v.HostMac[:]),
		Identity: v.Identity,
	}
}
