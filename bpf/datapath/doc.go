// Package datapath loads Axon's node datapath: the eBPF programs that
// forward pod traffic, and the maps that tell them about the node's
// endpoints and the other nodes' pod blocks.
//
// The packet programs come in three objects, one per attach point, each built from
// its own C source in bpf/src with the shared pieces (parsing, maps,
// counters, local delivery, encapsulation, decapsulation, FIB forwarding)
// in headers under bpf/include/axon; axon/datapath.h is the layout of keys,
// values and enums shared with this package:
//
//   - pod (pod.c): axon_from_pod, a tc direct-action filter on the ingress
//     of every pod's host-side veth (the agent attaches it with netlink, see
//     services/datapath/loader; [Objects.AttachFromPod] attaches it with tcx
//     for tests). A packet must carry the pod's own source address. To a
//     pod on this node it is redirected straight into that pod
//     (bpf_redirect_peer); to another node's block it is encapsulated in
//     VXLAN by the program and sent out of the underlay
//     (bpf_redirect_neigh), or through the flow-based tunnel device when the
//     program cannot (Geneve, no route, too big for the path) in tunnel
//     mode, or routed with the FIB and bpf_redirect_neigh in native mode;
//     everything else goes to the kernel (TCX_NEXT), which routes and
//     masquerades it.
//   - overlay (overlay.c): axon_from_overlay, tcx ingress of the tunnel
//     device (axon_vxlan), redirects decapsulated IPv4 or IPv6 from a pod
//     address to a pod on this node and marks the rest for the node; and
//     axon_to_overlay, tcx egress of the device, sets the tunnel endpoint of
//     packets the node's own stack routes into the overlay.
//   - underlay (underlay.c): axon_from_underlay, tcx ingress of the node's
//     underlay device, delivers packets from other nodes' pods to local
//     pods without the node's stack: decapsulating Axon's VXLAN in tunnel
//     mode, as they are in native mode.
//
// [Load] loads each object once per node and all four programs share one
// set of maps: endpoints and remote blocks per IP family
// (axon_endpoints/axon_endpoints6, axon_remote4/axon_remote6), pods'
// devices (axon_devices), the node's configuration (axon_config), the
// counters (axon_stats), and service load balancing: frontends
// (axon_lb_services), their backends by slot (axon_lb_slots), the agent's
// data about each (axon_lb_meta) and the connection tracker (axon_ct). The programs are shared by every endpoint: wiring
// a pod is a map write ([Objects.PutEndpoint]) plus an attach of
// [Objects.FromPod] on its host-side veth, never a compile or a load.
//
// Services (ClusterIP, for pods): axon_from_pod sends a pod's TCP or UDP
// packet to a frontend to one of its backends, on this node or another,
// chosen at random for a new connection and kept in the connection
// tracker, which also holds the reverse translation: every path that
// delivers to a pod (axon_from_pod, the underlay's decapsulation and native
// delivery, axon_from_overlay) gives a backend's reply the frontend as
// source. Both families share the maps, IPv4 as IPv4-mapped addresses.
// [Objects.PutServices] switches a frontend to new backends with one map
// write (two generations of slots), so no packet sees a half-written
// service; flows expire by the agent's [Objects.ExpireFlows]. The lookups
// cost nothing until the first service is programmed.
//
// The node's own processes (sock.c, [Objects.SocketPrograms]): cgroup
// programs on connect, sendmsg, recvmsg and getpeername, attached to the
// cgroup v2 root, give a socket of the node's network namespace (the one
// [Objects.SetSocketNetns] names) a backend instead of a frontend when it
// picks its peer, and show it the frontend afterwards (axon_sock_rev): the
// node's packets never carry a service address, so no per-packet
// translation is needed on their paths.
//
// Dual stack: each family has its own endpoint and remote-block maps with
// the same values, and the helpers pick the map by the address. The
// underlay is IPv4: IPv6 blocks are tunnelled to their node's IPv4 address,
// and IPv6 node addresses are refused with [ErrIPv6Unsupported]. IPv6 that
// the node must handle itself, neighbour discovery and link-local or
// multicast destinations, always goes to the kernel.
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
