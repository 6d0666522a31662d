// Package bpfmaps is the node agent's seam to the eBPF datapath: the maps it
// writes and reads ([Maps]) and the programs it attaches ([Programs]). The
// real implementation is services/datapath/loader; the in-memory fake in
// bpfmaps/bpffake lets the agent's logic be tested without root or BPF.
package bpfmaps

import (
	"net"
	"net/netip"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
)

// Endpoint is a pod address's entry: where the programs deliver it.
type Endpoint struct {
	// Ifindex is the pod's host-side veth in the node's namespace.
	Ifindex int
	// ID is the endpoint's ID.
	ID uint32
	// PodMAC and HostMAC are the pod side's and the host side's MACs.
	PodMAC, HostMAC net.HardwareAddr
}

// Mode is how pods reach other nodes: the datapath's own values, so that
// no second numbering needs translating.
type Mode = bpfdp.Mode

// Routing modes the agent configures. The datapath's ModeNone, the zero
// value, is not one: a Config without a mode is refused.
const (
	ModeNative = bpfdp.ModeNative
	ModeTunnel = bpfdp.ModeTunnel
)

// Config is the node-wide datapath configuration.
type Config struct {
	Mode Mode
	// TunnelIfindex is the overlay device (tunnel mode).
	TunnelIfindex int
	// Geneve says the overlay device is Geneve, not VXLAN.
	Geneve bool
	// NodeIP is the node's underlay IPv4 address (the tunnel source);
	// invalid lets the kernel pick.
	NodeIP netip.Addr
	// NodeAddrs are the node's own addresses, both families: those a node
	// port's wildcard frontend (0.0.0.0, ::) stands for, and the source of
	// connections from outside sent to another node's backend (SNAT).
	NodeAddrs []netip.Addr
}

// Maps is what the agent writes to and reads from the datapath's maps.
// Deleting a missing entry is success.
type Maps interface {
	// PutEndpoint writes a pod address's entry (either family).
	PutEndpoint(ip netip.Addr, ep Endpoint) error
	DeleteEndpoint(ip netip.Addr) error
	// Endpoint returns a pod address's entry; an error when it has none.
	Endpoint(ip netip.Addr) (Endpoint, error)
	// EndpointAddrs lists the addresses with endpoint entries.
	EndpointAddrs() ([]netip.Addr, error)

	// PutDevice and DeleteDevice keep which pod (a key the agent allocates
	// per pod) a host-side veth belongs to: a pod may send any of its
	// addresses out of any of its veths.
	PutDevice(ifindex int, pod uint32) error
	DeleteDevice(ifindex int) error
	// Device returns the pod key of a host-side veth; an error when it has
	// none.
	Device(ifindex int) (uint32, error)

	// PutRemote routes another node's block to that node's IPv4 underlay
	// address; DeleteRemote forgets it.
	PutRemote(block netip.Prefix, nodeIP netip.Addr) error
	DeleteRemote(block netip.Prefix) error
	// RemoteBlocks lists the remote blocks in the maps and their nodes.
	RemoteBlocks() (map[netip.Prefix]netip.Addr, error)

	// Configure writes the node-wide configuration.
	Configure(c Config) error
}

// Programs is how the agent attaches the datapath's programs.
type Programs interface {
	// AttachEndpoint puts the pod programs on a pod's host veth (what the
	// pod sends, and what the node's kernel sends into it); they stay
	// until the veth is deleted.
	AttachEndpoint(ifindex int) error
	// IsEndpointDevice reports whether ifindex carries a pod program.
	IsEndpointDevice(ifindex int) bool
	// EndpointProgramProblems describes what is wrong with the pod
	// programs on the host veth hostName; nil when they are in place.
	EndpointProgramProblems(hostName string) []string
	// AttachOverlay attaches the overlay programs to the tunnel device.
	AttachOverlay(ifindex int) error
	// AttachUnderlay attaches the delivery program to the underlay device.
	AttachUnderlay(ifindex int) error
	// AttachSocketLB makes the node's own processes reach services: the
	// socket programs, attached to the cgroup v2 root, translate the
	// sockets of the agent's network namespace (the node's) and no other.
	AttachSocketLB() error
}

// Datapath is the whole eBPF side of a node.
type Datapath interface {
	Maps
	LBMaps
	Programs
}
