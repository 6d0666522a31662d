/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Layout shared by the datapath programs (bpf/src/pod.c, overlay.c,
 * underlay.c; the maps themselves are declared in axon/maps.h) and the Go
 * agent (bpf/datapath, whose types bpf2go generates from this header with
 * the pod object). The agent pins the maps and migrates them on upgrade:
 * members appended to a value are zero-filled, but renaming, resizing,
 * reordering or removing one is refused on load
 * (datapath.ErrIncompatibleMap). Append, never reorder.
 *
 * Addresses are stored as their network-order bytes ("network byte order"),
 * exactly as they appear in the IP header, so the programs compare them
 * without conversion: an IPv4 address in a __u32, an IPv6 address in
 * __u8[16].
 *
 * IPv6 has maps of its own (axon_endpoints6, axon_remote6) with the same
 * values as their IPv4 counterparts, so the IPv4 maps of a running node keep
 * their layout. The underlay stays IPv4: axon_remote.node_ip4 is the tunnel
 * endpoint of IPv6 blocks too.
 */
#ifndef AXON_DATAPATH_H
#define AXON_DATAPATH_H

#include <linux/types.h>

/* axon_endpoints: every pod on this node, keyed by its IPv4 address. */
struct axon_endpoint_key {
	__u32 ip4; /* network byte order */
};

/* axon_endpoints6: every pod on this node, keyed by its IPv6 address. */
struct axon_endpoint_key6 {
	__u8 ip6[16]; /* network byte order */
};

/* The value of axon_endpoints and axon_endpoints6. */
struct axon_endpoint {
	__u32 ifindex;     /* host-side veth (lxc*) ifindex in the node netns */
	__u32 id;          /* endpoint id */
	__u8 pod_mac[6];   /* MAC of the pod-side interface */
	__u8 host_mac[6];  /* MAC of the host-side veth */
	__u32 identity;    /* security identity, for policy later */
	__u32 flags;       /* reserved, 0 */
};

/* axon_remote4: pod CIDR blocks of other nodes (LPM trie). */
struct axon_remote_key4 {
	__u32 prefixlen; /* host byte order, as the LPM trie requires */
	__u32 ip4;       /* network byte order */
};

/* axon_remote6: IPv6 pod CIDR blocks of other nodes (LPM trie). */
struct axon_remote_key6 {
	__u32 prefixlen; /* host byte order, as the LPM trie requires */
	__u8 ip6[16];    /* network byte order */
};

/*
 * The value of axon_remote4 and axon_remote6. The underlay is IPv4 for both
 * families: an IPv6 block is tunnelled to its node's IPv4 address. Native
 * mode routes by the FIB and does not use node_ip4.
 */
struct axon_remote {
	__u32 node_ip4; /* the owning node's underlay IPv4, network byte order */
	__u32 flags;    /* reserved, 0 */
};

/* axon_config: a single entry, key 0. */
enum axon_mode {
	AXON_MODE_NONE = 0,   /* not configured: every packet goes to the kernel */
	/*
	 * Remote blocks over VXLAN: the programs encapsulate and decapsulate
	 * themselves, and fall back to the flow-based tunnel device
	 * (vxlan_ifindex) for what they cannot handle.
	 */
	AXON_MODE_TUNNEL = 1,
	AXON_MODE_NATIVE = 2, /* remote blocks through the FIB (routes via netlink) */
};

struct axon_config {
	__u32 mode;          /* enum axon_mode */
	__u32 vxlan_ifindex; /* tunnel device (axon_vxlan or axon_geneve), tunnel mode */
	__u32 node_ip4;      /* this node's underlay IPv4, network byte order */
	__u32 flags;         /* AXON_CONFIG_* */
};

/*
 * The tunnel device (vxlan_ifindex) is Geneve: the programs neither build
 * nor strip VXLAN themselves, every tunnelled packet goes through it.
 */
#define AXON_CONFIG_GENEVE 1

/*
 * axon_stats: per-CPU __u64 counters indexed by enum axon_stat. Every packet
 * a program sees increments exactly one counter, so their sum is the number
 * of packets handled. IPv4 and IPv6 share the counters. The number of
 * counters is the size of the pinned map: a build with a different number
 * migrates it, keeping by index the counters both builds have.
 */
enum axon_stat {
	AXON_STAT_FWD_LOCAL = 0,      /* from_pod: to a local pod (redirect_peer) */
	AXON_STAT_FWD_TUNNEL,         /* from_pod: to a remote block, VXLAN built here (redirect_neigh to the underlay) */
	AXON_STAT_FWD_NATIVE,         /* from_pod: to a remote block via FIB + redirect_neigh */
	AXON_STAT_TO_HOST,            /* from_pod: IP not for a pod, left to the kernel (NEXT) */
	AXON_STAT_OVERLAY_LOCAL,      /* from_overlay, from_underlay: from another node to a local pod (redirect_peer) */
	AXON_STAT_OVERLAY_TO_HOST,    /* from_overlay: not for a local pod (NEXT) */
	AXON_STAT_DROP_MALFORMED,     /* truncated frame or bad IPv4/IPv6 header (DROP) */
	AXON_STAT_DROP_TTL,           /* TTL / hop limit would expire on forwarding (DROP) */
	AXON_STAT_DROP_TUNNEL,        /* encapsulation failed half-way, or no tunnel key could be set (DROP) */
	/*
	 * Not IPv4 and not forwarded by design: non-IP frames (ARP, ...) and
	 * IPv6 neighbour discovery or to link-local/multicast destinations.
	 * Left to the kernel (NEXT); axon_to_overlay drops the non-IP ones.
	 */
	AXON_STAT_NON_IPV4,
	AXON_STAT_FIB_MISS,           /* native mode: FIB lookup did not forward (NEXT) */
	AXON_STAT_UNCONFIGURED,       /* mode AXON_MODE_NONE (NEXT; to_overlay: DROP, also outside tunnel mode) */
	AXON_STAT_UNDERLAY_TO_HOST,   /* from_underlay: not for a local pod (NEXT) */
	/*
	 * from_underlay: VXLAN for a local pod from a pod address in a block
	 * the sending node does not own (NEXT: the kernel's path judges it).
	 */
	AXON_STAT_UNDERLAY_FOREIGN,
	/*
	 * from_pod: the source address is not the sending pod's own (DROP):
	 * a pod cannot spoof another pod's, or any other, address.
	 */
	AXON_STAT_DROP_SPOOFED,
	/*
	 * Into the tunnel through the overlay device (axon_vxlan/axon_geneve,
	 * the tunnel key set here): pods' packets the programs cannot
	 * encapsulate themselves (Geneve, no IPv4 node address, no route to
	 * the remote node), and the node's own traffic (to_overlay).
	 */
	AXON_STAT_FWD_TUNNEL_DEVICE,
	AXON_STAT_MAX,
};

#define AXON_MAX_ENDPOINTS 65536 /* defaults: the agent's flags resize the maps */
#define AXON_MAX_REMOTES 16384

/* VXLAN network identifier of pod traffic; flow-based VXLAN accepts any. */
#define AXON_TUNNEL_VNI 2
/* UDP port of axon_vxlan (the Linux default, not IANA's 4789). */
#define AXON_VXLAN_PORT 8472
/* TTL of the outer (underlay) IPv4 header. */
#define AXON_TUNNEL_TTL 64

#endif /* AXON_DATAPATH_H */
