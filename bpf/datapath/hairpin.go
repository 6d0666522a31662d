package datapath

import "net/netip"

// HairpinAddr returns the source a pod sees on a connection to a service
// that the load balancer sent back to the pod itself, for the family of
// client (AXON_HAIRPIN_* in datapath.h): 169.254.0.42 (a range RFC 3927
// keeps from link-local autoconfiguration) or 100::42 (the discard-only
// prefix of RFC 6666). A pod's own address as the source would be a martian
// to its kernel. The pod answers it through its router, where the answer is
// turned back into one from the frontend. Neither is ever a pod's address.
func HairpinAddr(client netip.Addr) netip.Addr {
	if client.Is4() {
		return netip.AddrFrom4([4]byte{169, 254, 0, 42})
	}
	return netip.AddrFrom16([16]byte{0: 0x01, 15: 0x42})
}
