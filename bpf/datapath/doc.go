// Package datapath loads Axon's node datapath: the tcx programs that forward
// pod traffic, and the maps that tell them about the node's endpoints and
// the other nodes' pod blocks (C source in bpf/src/datapath.c, shared layout
// in bpf/include/axon/datapath.h).
//
// The programs are loaded once per node and shared by every endpoint: wiring
// a pod is a map write ([Objects.PutEndpoint]) plus a tcx attach of
// [Objects.FromPod] on its host-side veth, never a compile or a load.
//
//   - axon_from_pod (tcx ingress of each host-side veth): IPv4 or IPv6 to a
//     pod on this node is redirected straight into the pod
//     (bpf_redirect_peer); to a remote node's block it is encapsulated
//     through the flow-based VXLAN device (tunnel mode) or routed with the
//     FIB and bpf_redirect_neigh (native mode); everything else goes to the
//     kernel (TCX_NEXT), which routes and masquerades it.
//   - axon_from_overlay (tcx ingress of axon_vxlan; in native mode it also
//     serves the underlay device): IPv4 or IPv6 for a pod on this node is
//     redirected into the pod; everything else goes to the kernel.
//   - axon_to_overlay (tcx egress of axon_vxlan): sets the tunnel endpoint
//     of packets the node's stack routes into the overlay.
//
// Dual stack: each family has its own endpoint and remote-block maps
// (axon_endpoints/axon_endpoints6, axon_remote4/axon_remote6) with the same
// values, and the helpers pick the map by the address. The underlay is IPv4:
// IPv6 blocks are tunnelled to their node's IPv4 address, and IPv6 node
// addresses are refused with [ErrIPv6Unsupported]. IPv6 that the node must
// handle itself, neighbour discovery and link-local or multicast
// destinations, always goes to the kernel.
//
// [Load] pins the maps by name under a per-node directory on bpffs and
// reuses pins that already exist, so an agent that restarts finds its
// endpoints and remote blocks where it left them while the attached
// programs keep forwarding. A pin of another size ([LoadOptions]) or of an
// older build whose value lacks members this build appended is migrated
// into a new map; a change that would lose entries is refused with
// [ErrIncompatibleMap] (see pinned.go). Loading needs CAP_BPF (CAP_SYS_ADMIN on older
// kernels); attaching needs CAP_NET_ADMIN.
package datapath
