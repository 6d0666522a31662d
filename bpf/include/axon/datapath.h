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
 * Service frontends have been programmed: the programs look up frontends
 * (axon_lb_services) and translated flows (axon_ct). Without it a node that
 * has no services pays for neither lookup. The agent sets it with the first
 * service and never clears it (flows outlive their service).
 */
#define AXON_CONFIG_LB 2

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
	/*
	 * from_pod: a new connection to a service frontend that has neither
	 * active nor terminating backends and that cannot be refused with an
	 * answer (DROP; the others count REJECTED). A packet the programs
	 * translate (service or reverse NAT) counts only the counter of where
	 * it then goes (forwarded-local, forwarded-tunnel, ...).
	 */
	AXON_STAT_DROP_NO_BACKEND,
	/* from_pod: a new service connection found axon_ct full (DROP). */
	AXON_STAT_DROP_CT_FULL,
	/* A translated packet could not be rewritten (DROP). */
	AXON_STAT_DROP_NAT,
	/*
	 * from_pod: a new connection to a service frontend without backends,
	 * refused at once (axon/reject.h): a TCP reset or an ICMP port
	 * unreachable handed back to the pod (redirect_peer). What cannot be
	 * answered (a reset, IPv4 with options) counts DROP_NO_BACKEND.
	 */
	AXON_STAT_REJECTED,
	/*
	 * from_pod, from_underlay: a new connection to a frontend that takes
	 * clients only from its source ranges (AXON_LB_F_SOURCE_RANGES) from
	 * another address (DROP).
	 */
	AXON_STAT_DROP_SOURCE_RANGE,
	/*
	 * from_underlay: a new connection from outside to a frontend whose
	 * backend is on another node found no free SNAT port (DROP).
	 */
	AXON_STAT_DROP_NO_NAT_PORT,
	/*
	 * to_pod: an IP packet the node's kernel sends into a pod (egress of
	 * its host-side veth), reverse-translated if it is a reply of a service
	 * flow whose backend is not a pod (NEXT; non-IP and IPv6 for the link
	 * count NON_IPV4).
	 */
	AXON_STAT_KERNEL_TO_POD,
	AXON_STAT_MAX,
};

#define AXON_MAX_ENDPOINTS 65536 /* defaults: the agent's flags resize the maps */
#define AXON_MAX_REMOTES 16384
#define AXON_MAX_LB_SERVICES 65536 /* frontends, and their axon_lb_meta entries */
#define AXON_MAX_LB_SLOTS 262144   /* backend slots of every frontend, both generations */
#define AXON_MAX_CT 262144         /* connection tracker entries (two per translated flow) */

/*
 * Service load balancing and the connection tracker (axon/lb.h, axon/ct.h).
 *
 * One address form for both: 16 bytes, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one map serves both families. Ports are in network
 * byte order, as in the packet.
 */

/* Scopes of a frontend entry (axon_lb_key.scope). */
enum axon_lb_scope {
	/* Every client; the only entry of most frontends. */
	AXON_LB_SCOPE_EXTERNAL = 0,
	/*
	 * In-cluster clients, when their backends differ from outside
	 * clients' (externalTrafficPolicy Local): looked up first for pods,
	 * only once the frontend's external entry exists.
	 */
	AXON_LB_SCOPE_INTERNAL = 1,
};

/* axon_lb_services: a frontend. */
struct axon_lb_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 scope; /* enum axon_lb_scope */
};

/*
 * The value of axon_lb_services: how a new connection to the frontend
 * picks its backend. Its backends are axon_lb_slots (id, slot, gen) for
 * slot in [0, active + terminating): the first active ones are ready
 * backends (a backend may fill several slots: weights), the terminating
 * ones follow and are used only when active is 0 (then they start at slot
 * 0). A new set of slots is written under the other generation and switched
 * in by replacing this value whole (one hash map update), so a packet sees
 * the old set or the new one, never a mix.
 */
struct axon_lb_service {
	__u32 id;               /* never 0: names the flows (axon_ct) and the slots */
	__u16 active;
	__u16 terminating;
	__u8 gen;               /* 0 or 1: the generation of the slots in use */
	__u8 type;              /* service type, for the agent (ClusterIP, NodePort, ...) */
	__u16 flags;            /* AXON_LB_F_* */
	__u32 affinity_timeout; /* seconds; 0: none (session affinity, axon/affinity.h) */
};

/*
 * axon_lb_service.flags: new connections only from the entry's prefixes in
 * axon_lb_source_ranges (loadBalancerSourceRanges); others are dropped.
 */
#define AXON_LB_F_SOURCE_RANGES 1

/*
 * axon_lb_source_ranges (LPM trie): the client prefixes of each frontend
 * entry with AXON_LB_F_SOURCE_RANGES. The service id leads the key, in
 * network byte order, so the trie matches it as the first 32 bits: an
 * entry's prefixes never match another's clients. prefixlen is 32 plus the
 * prefix's length in addr's form (an IPv4 /24 is IPv4-mapped: 32 + 96 + 24).
 */
struct axon_lb_source_key {
	__u32 prefixlen;   /* host byte order, as the LPM trie requires */
	__be32 service_id; /* network byte order */
	__u8 addr[16];
};

#define AXON_MAX_LB_SOURCE_RANGES 65536

/*
 * axon_lb_service.flags: new connections pick their backend by the entry's
 * Maglev table (axon_lb_maglev, axon/maglev.h) while it has active
 * backends, so that every node picks the same backend for the same flow.
 */
#define AXON_LB_F_MAGLEV 2

/*
 * Entries of a Maglev table: a prime, the agent's table size
 * (services/datapath/lb/maglev DefaultSize).
 */
#define AXON_MAGLEV_SIZE 16381

/*
 * axon_lb_maglev: the Maglev table of a frontend entry's generation,
 * written and switched with its slots. Each entry is a slot (of the
 * active ones) of the generation.
 */
struct axon_lb_maglev_key {
	__u32 service_id;
	__u8 gen;
	__u8 pad[3];
};

struct axon_lb_maglev {
	__u16 slot[AXON_MAGLEV_SIZE];
};

#define AXON_MAX_LB_MAGLEV 8192 /* tables of both generations */
/*
 * Seed of the flow hash: fixed, the same on every node (never skb->hash,
 * which the kernel seeds at random per boot).
 */
#define AXON_MAGLEV_SEED 0x41786f6eU

/* axon_lb_slots: one backend slot of a frontend's generation. */
struct axon_lb_slot_key {
	__u32 service_id;
	__u16 slot;
	__u8 gen;
	__u8 pad;
};

#define AXON_LB_BACKEND_LOCAL 1 /* the backend runs on this node */

struct axon_lb_backend {
	__u8 addr[16];
	__be16 port;
	__u8 flags; /* AXON_LB_BACKEND_* */
	__u8 pad;
};

/* Most bytes of axon_lb_meta: opaque data the agent keeps with a frontend. */
#define AXON_LB_META_MAX 512

/* axon_lb_meta (service id -> the agent's data; the programs never read it). */
struct axon_lb_meta {
	__u16 len;
	__u8 data[AXON_LB_META_MAX];
};

/* Directions of a connection tracker entry (axon_ct_key.dir). */
enum axon_ct_dir {
	AXON_CT_FORWARD = 0, /* the tuple as the client sends it */
	AXON_CT_REPLY = 1,   /* the tuple as the other side (a backend) answers */
};

/*
 * axon_ct: the connection tracker, keyed by the tuple of a packet as it
 * arrives. Its entry is the tuple the packet leaves with: the programs
 * rewrite addresses and ports to the entry's, whatever the direction
 * (service DNAT one way, reverse NAT the other; later SNAT the same way).
 */
struct axon_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum axon_ct_dir */
	__u16 pad;
};

#define AXON_CT_F_TCP_CLOSING 1 /* a TCP FIN or RST passed */
#define AXON_CT_F_SEEN 2        /* a packet matched the entry after its creation */

struct axon_ct_entry {
	__u8 to_saddr[16];
	__u8 to_daddr[16];
	__be16 to_sport;
	__be16 to_dport;
	__u32 service_id; /* the frontend a translated flow went through; 0: none */
	__u64 last_seen;  /* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC) of the last packet, to the second */
	__u32 flags;      /* AXON_CT_F_* */
	__u32 pad;
};

/*
 * Idle timeouts of connection tracker entries, in seconds (the agent's
 * ExpireFlows applies them; Cilium's defaults). A flow is as idle as the
 * newest of its two entries.
 */
#define AXON_CT_TIMEOUT_TCP 21600     /* established TCP: 6 h */
#define AXON_CT_TIMEOUT_TCP_SYN 60    /* TCP whose reply direction never passed */
#define AXON_CT_TIMEOUT_TCP_CLOSE 10  /* TCP after a FIN or RST */
#define AXON_CT_TIMEOUT_OTHER 60      /* UDP and the rest */
/* last_seen is rewritten at most this often (ns), sparing the cache line. */
#define AXON_CT_REFRESH_NS 1000000000ULL

/*
 * axon_lb_affinity: session affinity (ClientIP, axon/affinity.h). The
 * backend a client address of a frontend entry was last sent to, kept while
 * new connections keep coming sooner than the entry's affinity_timeout. An
 * LRU map: when full, the least recently used client loses its stickiness,
 * never its connections (the agent also forgets expired entries).
 */
struct axon_lb_affinity_key {
	__u32 service_id;
	__u32 pad;
	__u8 client[16];
};

struct axon_lb_affinity {
	struct axon_lb_backend backend;
	__u16 slot;      /* where backend was when chosen: looked at first */
	__u16 pad;
	__u64 last_used; /* bpf_ktime_get_ns() of the client's last new connection */
};

#define AXON_MAX_LB_AFFINITY 65536
/*
 * Slots searched for a remembered backend no longer at its slot (the
 * frontend switched to another set): beyond them the client picks anew.
 */
#define AXON_LB_AFFINITY_SCAN 64

/*
 * Hairpin: the source a pod sees on a connection to a service that the
 * load balancer sent back to the pod itself (axon/hairpin.h); its own
 * address would be a martian source to its kernel. Reserved, never a pod's
 * or a node's: IPv4 169.254.0.42 (169.254.0.0/24, which RFC 3927 keeps
 * from link-local autoconfiguration), IPv6 100::42 (100::/64, discard-only,
 * RFC 6666: never routed). Network byte order, the IPv4 one as
 * IPv4-mapped IPv6 like every address of axon_ct.
 */
#define AXON_HAIRPIN_IP4 0xa9fe002a /* host byte order */
#define AXON_HAIRPIN_IP6_HI 0x0100000000000000ULL /* host byte order, first 8 bytes */
#define AXON_HAIRPIN_IP6_LO 0x0000000000000042ULL /* host byte order, last 8 bytes */

/*
 * axon_node_addrs: this node's own addresses (IPv4 as IPv4-mapped IPv6), the
 * ones a node port's wildcard frontend (0.0.0.0, ::) stands for and the
 * in-cluster sources of external frontends (flag AXON_NODE_ADDR_OWN). The
 * unspecified address of a family (its key) holds instead the family's
 * SNAT source (flag AXON_NODE_ADDR_SNAT): the address connections from
 * outside to a frontend that is not a node address (LoadBalancer, external
 * IPs) leave with for another node's backend.
 */
struct axon_node_addr {
	__u8 addr[16];
};

#define AXON_NODE_ADDR_OWN 1
#define AXON_NODE_ADDR_SNAT 2

struct axon_node_addr_value {
	__u32 flags;   /* AXON_NODE_ADDR_* */
	__u8 snat[16]; /* with AXON_NODE_ADDR_SNAT */
};

#define AXON_MAX_NODE_ADDRS 256

/* VXLAN network identifier of pod traffic; flow-based VXLAN accepts any. */
#define AXON_TUNNEL_VNI 2
/* UDP port of axon_vxlan (the Linux default, not IANA's 4789). */
#define AXON_VXLAN_PORT 8472
/* TTL of the outer (underlay) IPv4 header. */
#define AXON_TUNNEL_TTL 64

/*
 * Port gates of the service lookups (axon/lb.h, axon/ct.h): two arrays
 * indexed by port (host byte order), of both protocols and families. A
 * packet whose destination port no frontend has skips the frontend
 * lookups; one whose source port no REPLY entry has skips the tracker's
 * lookup. A set gate only costs a lookup, so none is ever cleared.
 */
#define AXON_LB_PORTS 65536
/* axon_lb_ports (written by the agent, before the frontends it gates). */
#define AXON_LB_PORT_FRONTEND 1 /* a frontend entry of any scope has the port */
#define AXON_LB_PORT_INTERNAL 2 /* an AXON_LB_SCOPE_INTERNAL entry has the port */
/*
 * axon_ct_ports (written by the programs, the agent only fills it once when
 * it is created beside an existing tracker): 1 once a REPLY entry with the
 * port as its source port may exist. Whoever adds a REPLY entry sets it
 * first (ct_mark_reply_port).
 */

#endif /* AXON_DATAPATH_H */
