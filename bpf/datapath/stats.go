package datapath

import "fmt"

// Stats are the datapath's packet counters (axon_stats) summed over CPUs.
// Every packet a program handles is counted exactly once; IPv4 and IPv6
// share the counters. A packet translated for a service (or back) counts
// where it then goes (ForwardedLocal, ForwardedTunnel, ...).
//
// NonIPv4 keeps its name (and "non-ipv4" in [Stats.Map]) for existing
// consumers. It counts what is not IPv4 and not forwarded by design:
// non-IP frames (ARP, ...), left to the kernel except by axon_to_overlay,
// which drops them, and IPv6 the node handles itself (neighbour discovery,
// link-local and multicast destinations), always left to the kernel.
// Forwardable IPv6 moves the same counters as IPv4.
type Stats struct {
	ForwardedLocal  uint64 // from a pod to a pod on this node
	ForwardedTunnel uint64 // from a pod into the tunnel, VXLAN built by the program
	// ForwardedTunnelDevice counts packets sent into the tunnel through the
	// overlay device: pods' the program cannot encapsulate itself (Geneve,
	// no IPv4 node address, no route to the remote node) and the node's own.
	ForwardedTunnelDevice uint64
	ForwardedNative       uint64 // from a pod routed natively (FIB + redirect_neigh)
	ToHost                uint64 // IP from a pod, not for a pod: left to the kernel
	OverlayLocal          uint64 // from the overlay to a pod on this node
	OverlayToHost         uint64 // from the overlay, not for a local pod: left to the kernel
	DropMalformed         uint64 // truncated frames, bad IPv4/IPv6 headers
	DropTTL               uint64 // TTL or hop limit would have expired on forwarding
	DropTunnel            uint64 // setting the tunnel key failed
	NonIPv4               uint64 // not IPv4, not forwarded: ARP etc., IPv6 ND, link-local, multicast
	FIBMiss               uint64 // native mode: the FIB did not forward; left to the kernel
	Unconfigured          uint64 // no mode configured: left to the kernel
	UnderlayToHost        uint64 // from the underlay, not for a local pod: left to the kernel
	// UnderlayForeign counts VXLAN packets for a local pod whose inner
	// source is a pod of a block the sending node does not own (a
	// misconfigured or spoofing sender): left to the kernel's VXLAN path.
	UnderlayForeign uint64
	DropSpoofed     uint64 // from a pod with a source address not its own
	// DropNoBackend counts new connections to a service frontend with no
	// backend, active or terminating, that could not be refused with an
	// answer (a TCP reset, IPv4 with options): most count Rejected.
	DropNoBackend uint64
	// DropCTFull counts new service connections refused because the
	// connection tracker (axon_ct) is full.
	DropCTFull uint64
	// DropNAT counts packets of a translated flow that could not be
	// rewritten.
	DropNAT uint64
	// Rejected counts new connections to a service frontend with no
	// backend that were refused at once: a TCP reset or an ICMP port
	// unreachable handed back to the client pod. (Those that cannot be
	// answered count DropNoBackend.)
	Rejected uint64
	// DropSourceRange counts new connections to a frontend with source
	// ranges from a client outside them.
	DropSourceRange uint64
	// DropNoNATPort counts new connections from outside to a frontend
	// whose backend is on another node, refused because no SNAT port was
	// free.
	DropNoNATPort uint64
	// KernelToPod counts packets the node's kernel routes into a pod (the
	// egress of its host-side veth), among them the replies of service
	// backends that are no pods, translated back there.
	KernelToPod uint64
}

// statFields maps every counter of enum axon_stat to its name and field.
var statFields = [...]struct {
	stat  podAxonStat
	name  string
	field func(*Stats) *uint64
}{
	{podAxonStatAXON_STAT_FWD_LOCAL, "forwarded-local", func(s *Stats) *uint64 { return &s.ForwardedLocal }},
	{podAxonStatAXON_STAT_FWD_TUNNEL, "forwarded-tunnel", func(s *Stats) *uint64 { return &s.ForwardedTunnel }},
	{podAxonStatAXON_STAT_FWD_NATIVE, "forwarded-native", func(s *Stats) *uint64 { return &s.ForwardedNative }},
	{podAxonStatAXON_STAT_TO_HOST, "to-host", func(s *Stats) *uint64 { return &s.ToHost }},
	{podAxonStatAXON_STAT_OVERLAY_LOCAL, "from-overlay-local", func(s *Stats) *uint64 { return &s.OverlayLocal }},
	{podAxonStatAXON_STAT_OVERLAY_TO_HOST, "from-overlay-to-host", func(s *Stats) *uint64 { return &s.OverlayToHost }},
	{podAxonStatAXON_STAT_DROP_MALFORMED, "drop-malformed", func(s *Stats) *uint64 { return &s.DropMalformed }},
	{podAxonStatAXON_STAT_DROP_TTL, "drop-ttl", func(s *Stats) *uint64 { return &s.DropTTL }},
	{podAxonStatAXON_STAT_DROP_TUNNEL, "drop-tunnel", func(s *Stats) *uint64 { return &s.DropTunnel }},
	{podAxonStatAXON_STAT_NON_IPV4, "non-ipv4", func(s *Stats) *uint64 { return &s.NonIPv4 }},
	{podAxonStatAXON_STAT_FIB_MISS, "fib-miss", func(s *Stats) *uint64 { return &s.FIBMiss }},
	{podAxonStatAXON_STAT_UNCONFIGURED, "unconfigured", func(s *Stats) *uint64 { return &s.Unconfigured }},
	{podAxonStatAXON_STAT_UNDERLAY_TO_HOST, "from-underlay-to-host", func(s *Stats) *uint64 { return &s.UnderlayToHost }},
	{podAxonStatAXON_STAT_UNDERLAY_FOREIGN, "from-underlay-foreign", func(s *Stats) *uint64 { return &s.UnderlayForeign }},
	{podAxonStatAXON_STAT_DROP_SPOOFED, "drop-spoofed", func(s *Stats) *uint64 { return &s.DropSpoofed }},
	{podAxonStatAXON_STAT_FWD_TUNNEL_DEVICE, "forwarded-tunnel-device", func(s *Stats) *uint64 { return &s.ForwardedTunnelDevice }},
	{podAxonStatAXON_STAT_DROP_NO_BACKEND, "drop-no-backend", func(s *Stats) *uint64 { return &s.DropNoBackend }},
	{podAxonStatAXON_STAT_DROP_CT_FULL, "drop-ct-full", func(s *Stats) *uint64 { return &s.DropCTFull }},
	{podAxonStatAXON_STAT_DROP_NAT, "drop-nat", func(s *Stats) *uint64 { return &s.DropNAT }},
	{podAxonStatAXON_STAT_REJECTED, "rejected-no-backend", func(s *Stats) *uint64 { return &s.Rejected }},
	{podAxonStatAXON_STAT_DROP_SOURCE_RANGE, "drop-source-range", func(s *Stats) *uint64 { return &s.DropSourceRange }},
	{podAxonStatAXON_STAT_DROP_NO_NAT_PORT, "drop-no-nat-port", func(s *Stats) *uint64 { return &s.DropNoNATPort }},
	{podAxonStatAXON_STAT_KERNEL_TO_POD, "kernel-to-pod", func(s *Stats) *uint64 { return &s.KernelToPod }},
}

// Map returns the counters by name (forwarded-local, drop-ttl, ...), e.g.
// for metrics labels.
func (s Stats) Map() map[string]uint64 {
	m := make(map[string]uint64, len(statFields))
	for _, f := range statFields {
		m[f.name] = *f.field(&s)
	}
	return m
}

// Total is the number of packets the programs handled.
func (s Stats) Total() uint64 {
	var n uint64
	for _, f := range statFields {
		n += *f.field(&s)
	}
	return n
}

// Stats reads the counters, summed over CPUs. They only grow; they are
// shared by every Objects loaded with the same pin directory.
func (o *Objects) Stats() (Stats, error) {
	var (
		s      Stats
		perCPU []uint64
	)
	for _, f := range statFields {
		if err := o.maps.AxonStats.Lookup(uint32(f.stat), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("read counter %s: %w", f.name, err)
		}
		p := f.field(&s)
		for _, v := range perCPU {
			*p += v
		}
	}
	return s, nil
}
