// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * Axon's node datapath: tc programs loaded once per node and shared by all
 * endpoints. Everything per endpoint lives in maps (axon/datapath.h), so
 * wiring a pod is a map write and an attach, never a compile or load. The
 * verdicts are tcx's, whose values tc's direct-action filters share.
 *
 *   axon_from_pod      ingress of every pod's host-side veth (lxc*), as a
 *                      tc filter: packets the pod sends.
 *   axon_from_overlay  tcx ingress of axon_vxlan (decapsulated frames):
 *                      delivers packets for local pods, marks the rest for
 *                      the node.
 *   axon_from_underlay tcx ingress of the underlay device: delivers packets
 *                      from other nodes for local pods (decapsulating VXLAN
 *                      in tunnel mode).
 *   axon_to_overlay    tcx egress of axon_vxlan: tunnel endpoint for packets
 *                      the node's own stack routes into the overlay.
 *
 * IPv4 and IPv6 take the same paths, each family with its own endpoint and
 * remote-block maps; the underlay (VXLAN outer header) is IPv4 for both.
 * Anything else (ARP, ...) returns AXON_TCX_NEXT so the kernel handles it,
 * and so does IPv6 the node must see itself: neighbour discovery and
 * link-local or multicast destinations.
 *
 * Redirect helpers only record the target and return AXON_TCX_REDIRECT; the
 * kernel acts after the program ends. Counters are therefore bumped before
 * the helper is called.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/datapath.h"
#include "axon/license.h"
#include "axon/tcx.h"

/* <sys/socket.h> is not for BPF targets. */
#define AXON_AF_INET 2
#define AXON_AF_INET6 10

/* ICMPv6 types of neighbour discovery (RFC 4861): RS, RA, NS, NA, redirect. */
#define AXON_ND_FIRST 133
#define AXON_ND_LAST 137

/* Traffic class and flow label: the 28 low bits of the first word. */
#define AXON_IPV6_FLOWINFO_MASK 0x0FFFFFFF

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, struct axon_endpoint_key);
	__type(value, struct axon_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_endpoints SEC(".maps");

/*
 * Pods' host-side veths (ifindex) and the pod each belongs to (an opaque
 * key): a pod with several Axon attachments may send any of its addresses
 * out of any of its veths.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_REMOTES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_remote_key4);
	__type(value, struct axon_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_remote4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, struct axon_endpoint_key6);
	__type(value, struct axon_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_endpoints6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_REMOTES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_remote_key6);
	__type(value, struct axon_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_remote6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct axon_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXON_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_stats SEC(".maps");

/*
 * The enums are only used as constants, which clang does not describe in
 * BTF. These unused pointers in a section no program references make clang
 * emit them so that bpf2go -type can export them; the loader ignores the
 * section.
 */
const enum axon_stat *__axon_stat_btf __attribute__((unused, section(".axon_btf")));
const enum axon_mode *__axon_mode_btf __attribute__((unused, section(".axon_btf")));

static __always_inline void count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&axon_stats, &stat);

	if (c)
		*c += 1; /* per-CPU: no atomics needed */
}

static __always_inline int next(__u32 stat)
{
	count(stat);
	return AXON_TCX_NEXT;
}

static __always_inline int drop(__u32 stat)
{
	count(stat);
	return AXON_TCX_DROP;
}

enum parse {
	PARSE_IPV4,
	PARSE_IPV6,
	PARSE_IPV6_LINK, /* IPv6 for the node itself (ND, link-local, multicast) */
	PARSE_OTHER,     /* not IP: leave it to the kernel */
	PARSE_MALFORMED, /* truncated or invalid: drop */
};

/* The headers parse() found; ip4 or ip6 according to its result. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
};

/*
 * Returns the start of the frame with its first len bytes in the linear
 * area, or NULL if the frame is shorter. The headers of locally generated
 * packets are always linear; anything else (e.g. a GRO'd frame from the
 * underlay) is pulled first. The pull invalidates every packet pointer, so
 * callers derive theirs from the result.
 */
static __always_inline void *linear(struct __sk_buff *skb, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + len <= data_end)
		return data;
	if (bpf_skb_pull_data(skb, len) < 0)
		return NULL;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + len > data_end)
		return NULL;
	return data;
}

static __always_inline enum parse parse_ipv4(struct __sk_buff *skb, struct pkt *p)
{
	struct ethhdr *eth = linear(skb, sizeof(struct ethhdr) + sizeof(struct iphdr));
	struct iphdr *ip;

	if (!eth)
		return PARSE_MALFORMED;
	ip = (void *)(eth + 1);
	/* Options (ihl > 5) are fine: only TTL and checksum are touched. */
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	p->eth = eth;
	p->ip4 = ip;
	return PARSE_IPV4;
}

/*
 * IPv6 the node's own stack must handle, which therefore never takes a
 * shortcut: multicast (ff00::/8) and link-local (fe80::/10) destinations,
 * and neighbour discovery to any destination (a unicast NS, a redirect).
 * Only the ICMPv6 type byte right after the fixed header is read: ND has no
 * extension headers before it. A packet too short to hold one is not ND.
 */
static __always_inline int ipv6_link_scope(struct __sk_buff *skb, const struct ipv6hdr *ip6)
{
	const __u8 *dst = ip6->daddr.in6_u.u6_addr8;
	__u8 type;

	if (dst[0] == 0xff)
		return 1;
	if (dst[0] == 0xfe && (dst[1] & 0xc0) == 0x80)
		return 1;
	if (ip6->nexthdr != IPPROTO_ICMPV6)
		return 0;
	/* A copy, wherever the byte is: no pull, packet pointers stay valid. */
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + sizeof(*ip6), &type, sizeof(type)) < 0)
		return 0;
	return type >= AXON_ND_FIRST && type <= AXON_ND_LAST;
}

/*
 * Whether an IPv6 source is one a host uses before or beside its addresses:
 * link-local (fe80::/10), or unspecified (::) towards multicast (DAD, MLD).
 */
static __always_inline int ipv6_link_source(const struct in6_addr *a, const struct in6_addr *dst)
{
	const __u32 *w = a->in6_u.u6_addr32;

	if ((a->in6_u.u6_addr8[0] == 0xfe) && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80)
		return 1;
	return !(w[0] | w[1] | w[2] | w[3]) && dst->in6_u.u6_addr8[0] == 0xff;
}

static __always_inline enum parse parse_ipv6(struct __sk_buff *skb, struct pkt *p)
{
	struct ethhdr *eth = linear(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr));
	struct ipv6hdr *ip6;

	if (!eth)
		return PARSE_MALFORMED;
	ip6 = (void *)(eth + 1);
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	p->eth = eth;
	p->ip6 = ip6;
	/* Extension headers are fine: only the hop limit is touched. */
	if (ipv6_link_scope(skb, ip6))
		return PARSE_IPV6_LINK;
	return PARSE_IPV6;
}

/* Finds the Ethernet and IP headers. */
static __always_inline enum parse parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return parse_ipv4(skb, p);
	case bpf_htons(ETH_P_IPV6):
		return parse_ipv6(skb, p);
	default:
		return PARSE_OTHER;
	}
}

/*
 * Decrements the TTL and updates the header checksum incrementally, as the
 * kernel's ip_decrease_ttl(): the TTL is the high byte of its 16-bit word, so
 * the word drops by 0x0100 and the one's-complement checksum rises by as
 * much. The addition works on the raw (network-order) value because one's
 * complement sums are byte-order independent; the final term folds the
 * carry.
 */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/* ECN codepoints (RFC 3168), the low two bits of TOS / traffic class. */
#define AXON_ECN_MASK 0x3
#define AXON_ECN_CE 0x3

static __always_inline __u8 ipv6_ecn(const struct ipv6hdr *ip6)
{
	return (ip6->flow_lbl[0] >> 4) & AXON_ECN_MASK;
}

/*
 * Marks an ECN-capable IPv4 packet Congestion Experienced, updating the
 * header checksum for its first 16-bit word (RFC 1624: HC' = ~(~HC + ~m +
 * m'); one's complement sums need no byte swapping).
 */
static __always_inline void ipv4_set_ce(struct iphdr *ip)
{
	__u16 *word = (__u16 *)ip;
	__u16 from = *word;
	__u32 sum;

	ip->tos |= AXON_ECN_CE;
	sum = (__u16)~ip->check + (__u16)~from + *word;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~(__u16)sum;
}

/* Marks an ECN-capable IPv6 packet CE, updating a CHECKSUM_COMPLETE sum. */
static __always_inline void ipv6_set_ce(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	__be32 from, to; /* version, traffic class, flow label */

	__builtin_memcpy(&from, ip6, sizeof(from));
	ip6->flow_lbl[0] |= AXON_ECN_CE << 4;
	__builtin_memcpy(&to, ip6, sizeof(to));
	bpf_csum_update(skb, bpf_csum_diff(&from, sizeof(from), &to, sizeof(to), 0));
}

static __always_inline const struct axon_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&axon_config, &zero);
}

static __always_inline const struct axon_endpoint *endpoint4(__u32 ip4)
{
	struct axon_endpoint_key key = { .ip4 = ip4 };

	return bpf_map_lookup_elem(&axon_endpoints, &key);
}

static __always_inline const struct axon_endpoint *endpoint6(const struct in6_addr *ip6)
{
	struct axon_endpoint_key6 key;

	__builtin_memcpy(key.ip6, ip6, sizeof(key.ip6));
	return bpf_map_lookup_elem(&axon_endpoints6, &key);
}

static __always_inline const struct axon_remote *remote4(__u32 ip4)
{
	struct axon_remote_key4 key = { .prefixlen = 32, .ip4 = ip4 };

	return bpf_map_lookup_elem(&axon_remote4, &key);
}

static __always_inline const struct axon_remote *remote6(const struct in6_addr *ip6)
{
	struct axon_remote_key6 key;

	key.prefixlen = 128;
	__builtin_memcpy(key.ip6, ip6, sizeof(key.ip6));
	return bpf_map_lookup_elem(&axon_remote6, &key);
}

/*
 * Whether src is a pod's address, on this node or in another node's block.
 * Traffic between pods skips the node's stack on both ends, so the node's
 * connection tracking sees neither direction. A packet from anything else
 * (another node's own address, an outside router) must come in through the
 * kernel: otherwise the pod's reply, which takes the kernel's path out,
 * would look like a new connection and be masqueraded.
 */
static __always_inline int pod_src4(__u32 saddr)
{
	return endpoint4(saddr) || remote4(saddr);
}

static __always_inline int pod_src6(const struct in6_addr *saddr)
{
	return endpoint6(saddr) || remote6(saddr);
}

/*
 * Whether a packet the node at outer (the tunnel's outer source) sent comes
 * from one of that node's own pods: saddr lies in one of its blocks. Only
 * such packets are decapsulated on the underlay. Any other VXLAN packet for
 * the node (from an unknown or spoofing sender, or speaking for another
 * node's pods) goes on to the kernel, whose UDP socket and host firewall
 * judge it as they would without Axon.
 */
static __always_inline int from_owner4(__u32 saddr, __be32 outer)
{
	const struct axon_remote *r = remote4(saddr);

	return r && r->node_ip4 == outer;
}

static __always_inline int from_owner6(const struct in6_addr *saddr, __be32 outer)
{
	const struct axon_remote *r = remote6(saddr);

	return r && r->node_ip4 == outer;
}

/*
 * Hands the packet to a pod on this node: it arrives at the pod's interface
 * as if the host-side veth had sent it (redirect_peer skips the node's
 * stack, so the node needs no route to the pod). The node acts as the pod's
 * router, hence the TTL (hop limit) decrement, done by the callers, and the
 * router MAC as source.
 */
static __always_inline int to_pod(struct ethhdr *eth, const struct axon_endpoint *ep, __u32 stat)
{
	__builtin_memcpy(eth->h_dest, ep->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ep->host_mac, ETH_ALEN);
	count(stat);
	return bpf_redirect_peer(ep->ifindex, 0);
}

static __always_inline int deliver_local4(struct ethhdr *eth, struct iphdr *ip,
					  const struct axon_endpoint *ep, __u32 stat)
{
	if (ip->ttl <= 1)
		return drop(AXON_STAT_DROP_TTL);
	ipv4_dec_ttl(ip);
	return to_pod(eth, ep, stat);
}

/*
 * IPv6 has no header checksum: the hop limit is just decremented. A packet
 * whose device supplied a checksum of the whole packet (CHECKSUM_COMPLETE,
 * from a NIC on the underlay) gets that sum updated, as the kernel's
 * forwarding would; for any other packet bpf_csum_update does nothing.
 */
static __always_inline int deliver_local6(struct __sk_buff *skb, struct ethhdr *eth,
					  struct ipv6hdr *ip6, const struct axon_endpoint *ep,
					  __u32 stat)
{
	__be32 from, to; /* payload length, next header, hop limit */

	if (ip6->hop_limit <= 1)
		return drop(AXON_STAT_DROP_TTL);
	__builtin_memcpy(&from, (void *)ip6 + 4, sizeof(from));
	ip6->hop_limit--;
	__builtin_memcpy(&to, (void *)ip6 + 4, sizeof(to));
	bpf_csum_update(skb, bpf_csum_diff(&from, sizeof(from), &to, sizeof(to), 0));
	return to_pod(eth, ep, stat);
}

/*
 * Encapsulates towards the node that owns the destination block, over the
 * IPv4 underlay whatever the inner family. The inner frame keeps its MACs
 * and TTL: the receiving node rewrites both when it delivers (one routed hop
 * per node pair, as with kernel VXLAN routing).
 */
static __always_inline int set_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				      const struct axon_remote *remote)
{
	struct bpf_tunnel_key key;

	/* Whole struct zeroed: the helper reads it all, padding included. */
	__builtin_memset(&key, 0, sizeof(key));
	key.tunnel_id = AXON_TUNNEL_VNI;
	/* The helper takes host byte order (it applies cpu_to_be32). */
	key.remote_ipv4 = bpf_ntohl(remote->node_ip4);
	key.local_ipv4 = bpf_ntohl(cfg->node_ip4); /* 0: the kernel picks */
	key.tunnel_ttl = AXON_TUNNEL_TTL;
	/*
	 * No BPF_F_TUNINFO_IPV6: the outer header is IPv4, where a zero UDP
	 * checksum is valid and what a VXLAN device sends by default. Without
	 * BPF_F_ZERO_CSUM_TX the helper asks for an outer checksum, which the
	 * kernel computes in software for every segment of a GSO packet.
	 */
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

/* The VXLAN header (RFC 7348): flags (I = VNI valid), VNI in the top 24 bits. */
struct axon_vxlanhdr {
	__be32 flags;
	__be32 vni;
};

#define AXON_VXLAN_FLAG_VNI bpf_htonl(0x08000000)

/* What encapsulation inserts after the Ethernet header (see encap_vxlan). */
struct axon_vxlan_encap {
	struct iphdr ip;
	struct udphdr udp;
	struct axon_vxlanhdr vx;
	struct ethhdr inner;
} __attribute__((packed));

/* Kernel flag macro missing from older UAPI headers. */
#ifndef BPF_F_ADJ_ROOM_ENCAP_L2
#define BPF_F_ADJ_ROOM_ENCAP_L2(len) (((__u64)len & 0xff) << 56)
#endif

/* IPv6 hop-by-hop option carrying a jumbo payload length (RFC 2675). */
#define AXON_IPV6_TLV_JUMBO 0xc2

/*
 * The outer IPv4 length of the largest packet encapsulating skb sends: the
 * whole packet's, or for a GSO packet one segment's (its inner IP and
 * TCP/UDP headers plus gso_size). A GSO packet whose headers are not TCP or
 * UDP over IPv4 or IPv6 gets the largest length, so it is never sent with
 * DF unchecked. (A pod's own tunnel packets count as UDP: their segments'
 * inner headers are not seen, so they are undercounted.)
 */
static __always_inline __u32 encap_wire_len(struct __sk_buff *skb, __u32 inner_len)
{
	const __u32 l3 = sizeof(struct ethhdr), unknown = 0xffff;
	__u32 l4, hdrs, jumbo = 0;
	__u8 proto, doff;

	if (!skb->gso_size)
		return sizeof(struct axon_vxlan_encap) + inner_len;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;

		if (bpf_skb_load_bytes(skb, l3, &vihl, 1) < 0 ||
		    bpf_skb_load_bytes(skb, l3 + __builtin_offsetof(struct iphdr, protocol), &proto, 1) < 0)
			return unknown;
		l4 = (vihl & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, l3 + __builtin_offsetof(struct ipv6hdr, nexthdr), &proto, 1) < 0)
			return unknown;
		l4 = sizeof(struct ipv6hdr);
		/*
		 * BIG TCP over IPv6: a packet over 64 KiB carries an 8-byte
		 * hop-by-hop header with a jumbo length, which its segments
		 * do not.
		 */
		if (proto == IPPROTO_HOPOPTS) {
			__u8 hbh[3]; /* next header, length, first option's type */

			if (bpf_skb_load_bytes(skb, l3 + l4, hbh, sizeof(hbh)) < 0 || hbh[1] != 0 ||
			    hbh[2] != AXON_IPV6_TLV_JUMBO)
				return unknown;
			proto = hbh[0];
			jumbo = 8;
		}
	} else {
		return unknown;
	}
	if (proto == IPPROTO_UDP) {
		hdrs = l4 + sizeof(struct udphdr);
	} else if (proto == IPPROTO_TCP) {
		/* The data offset: the top four bits of TCP header byte 12. */
		if (bpf_skb_load_bytes(skb, l3 + l4 + jumbo + 12, &doff, 1) < 0)
			return unknown;
		hdrs = l4 + (doff >> 4) * 4;
	} else {
		return unknown;
	}
	return sizeof(struct axon_vxlan_encap) + hdrs + skb->gso_size;
}

/*
 * Encapsulates the frame in VXLAN to remote here, as axon_vxlan would, and
 * sends it out of the underlay device the node's FIB picks for the remote
 * node: the packet skips the VXLAN device, its per-packet route lookup and
 * the node's netfilter output path. Returns a verdict, or -1 when the
 * caller should use the tunnel device instead (Geneve, no node address, no
 * route); nothing is changed then.
 */
static __always_inline long encap_vxlan(struct __sk_buff *skb, const struct axon_config *cfg,
					const struct axon_remote *remote, struct ethhdr *eth,
					__u8 ecn)
{
	const __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
			    BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			    BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
	__u32 inner_len = skb->len - sizeof(struct ethhdr), outer_len;
	__be16 outer_proto = bpf_htons(ETH_P_IP);
	struct axon_vxlan_encap h;
	struct bpf_fib_lookup fib;
	struct bpf_redir_neigh nh;
	struct iphdr ip;
	__u32 hash;
	__s64 csum;
	long rc;

	if (!cfg->node_ip4 || (cfg->flags & AXON_CONFIG_GENEVE))
		return -1;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AXON_AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.ipv4_src = cfg->node_ip4;
	fib.ipv4_dst = remote->node_ip4;
	fib.ifindex = skb->ingress_ifindex;
	/*
	 * The lookup checks what goes on the wire against the path MTU the
	 * node knows for the remote node (a route's, or one an ICMP "need to
	 * fragment" taught it): a packet that would not fit goes to
	 * axon_vxlan, which sends it without DF, fragmented, rather than
	 * being built here with DF and lost on the way.
	 */
	fib.tot_len = encap_wire_len(skb, inner_len);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;

	/* The outer IPv4 header is built apart: its checksum needs it aligned. */
	__builtin_memset(&ip, 0, sizeof(ip));
	ip.version = 4;
	ip.ihl = 5;
	ip.ttl = AXON_TUNNEL_TTL;
	/* The inner ECN field, so routers on the underlay can mark congestion
	 * (RFC 6040 normal mode, as the kernel's tunnels do). */
	ip.tos = ecn;
	ip.protocol = IPPROTO_UDP;
	ip.saddr = cfg->node_ip4;
	ip.daddr = remote->node_ip4;
	/* A GSO packet's lengths are redone per segment by the kernel. One of
	 * over 64 KiB (BIG TCP) gets 0, as the kernel writes for those. */
	outer_len = sizeof(h) + inner_len;
	ip.tot_len = outer_len > 0xffff ? 0 : bpf_htons(outer_len);
	/* The source port spreads flows over the underlay's paths, as the
	 * kernel's VXLAN does, from the inner flow's hash. */
	hash = bpf_get_hash_recalc(skb);
	/* Don't fragment: the packet fits the path (checked above), and
	 * fragments of one flow would share the hash-derived ID. */
	ip.frag_off = bpf_htons(0x4000);
	ip.id = (__be16)hash;
	csum = bpf_csum_diff(NULL, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (csum < 0)
		return -1;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	ip.check = ~(__u16)csum;

	__builtin_memset(&h, 0, sizeof(h));
	__builtin_memcpy(&h.ip, &ip, sizeof(ip));
	__builtin_memcpy(&h.inner, eth, sizeof(h.inner));
	h.udp.source = bpf_htons(0xc000 | ((hash ^ (hash >> 16)) & 0x3fff));
	h.udp.dest = bpf_htons(AXON_VXLAN_PORT);
	h.udp.len = outer_len - sizeof(h.ip) > 0xffff ? 0 : bpf_htons(outer_len - sizeof(h.ip));
	/* UDP checksum 0: valid over IPv4, and what axon_vxlan sends. */
	h.vx.flags = AXON_VXLAN_FLAG_VNI;
	h.vx.vni = bpf_htonl(AXON_TUNNEL_VNI << 8);

	if (bpf_skb_adjust_room(skb, sizeof(h), BPF_ADJ_ROOM_MAC, flags) < 0)
		return -1;
	/* The frame's own Ethernet header is now the outer one. */
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0) < 0 ||
	    bpf_skb_store_bytes(skb, __builtin_offsetof(struct ethhdr, h_proto), &outer_proto,
				sizeof(outer_proto), 0) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = AXON_AF_INET;
	nh.ipv4_nh = fib.ipv4_dst;
	count(AXON_STAT_FWD_TUNNEL);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int to_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				     const struct axon_remote *remote, struct ethhdr *eth, __u8 ecn)
{
	/* axon_vxlan sets the outer ECN field from the inner one itself (an
	 * inner CE as ECT(0), as Linux tunnels do). */
	long rc = encap_vxlan(skb, cfg, remote, eth, ecn);

	if (rc >= 0)
		return rc;
	if (set_tunnel(skb, cfg, remote) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	count(AXON_STAT_FWD_TUNNEL_DEVICE);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/*
 * Routes through the node's FIB (routes for remote blocks are installed via
 * netlink) and lets redirect_neigh resolve the next hop's MAC. FWD_DISABLED
 * (forwarding off), local or unreachable destinations go to the kernel.
 */
static __always_inline int to_native4(struct __sk_buff *skb, struct iphdr *ip)
{
	struct bpf_fib_lookup fib;
	struct bpf_redir_neigh nh;
	long rc;

	if (ip->ttl <= 1)
		return drop(AXON_STAT_DROP_TTL);

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AXON_AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	/* tot_len stays 0: no MTU check here, the egress device does it. */
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* NO_NEIGH has still filled in ifindex and the next hop (ipv4_dst). */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return next(AXON_STAT_FIB_MISS);

	ipv4_dec_ttl(ip);
	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = AXON_AF_INET;
	nh.ipv4_nh = fib.ipv4_dst;
	count(AXON_STAT_FWD_NATIVE);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/*
 * As to_native4, with the IPv6 FIB: the node needs
 * net.ipv6.conf.all.forwarding=1, and the next hop is an IPv6 address.
 */
static __always_inline int to_native6(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	struct bpf_fib_lookup fib;
	struct bpf_redir_neigh nh;
	long rc;

	if (ip6->hop_limit <= 1)
		return drop(AXON_STAT_DROP_TTL);

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AXON_AF_INET6;
	fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(AXON_IPV6_FLOWINFO_MASK);
	fib.l4_protocol = ip6->nexthdr;
	__builtin_memcpy(fib.ipv6_src, &ip6->saddr, sizeof(fib.ipv6_src));
	__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, sizeof(fib.ipv6_dst));
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* NO_NEIGH has still filled in ifindex and the next hop (ipv6_dst). */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return next(AXON_STAT_FIB_MISS);

	ip6->hop_limit--;
	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = AXON_AF_INET6;
	__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, sizeof(nh.ipv6_nh));
	count(AXON_STAT_FWD_NATIVE);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/*
 * Only pod blocks of other nodes are forwarded to remotes. Everything else
 * (the node, other hosts, the outside) takes the kernel's path, where
 * netfilter masquerades pod sources leaving the cluster.
 */
static __always_inline int to_remote4(struct __sk_buff *skb, const struct axon_config *cfg,
				      struct ethhdr *eth, struct iphdr *ip)
{
	const struct axon_remote *remote = remote4(ip->daddr);

	if (!remote)
		return next(AXON_STAT_TO_HOST);
	switch (cfg->mode) {
	case AXON_MODE_TUNNEL:
		return to_tunnel(skb, cfg, remote, eth, ip->tos & AXON_ECN_MASK);
	case AXON_MODE_NATIVE:
		return to_native4(skb, ip);
	default:
		return next(AXON_STAT_TO_HOST);
	}
}

static __always_inline int to_remote6(struct __sk_buff *skb, const struct axon_config *cfg,
				      struct ethhdr *eth, struct ipv6hdr *ip6)
{
	const struct axon_remote *remote = remote6(&ip6->daddr);

	if (!remote)
		return next(AXON_STAT_TO_HOST);
	switch (cfg->mode) {
	case AXON_MODE_TUNNEL:
		return to_tunnel(skb, cfg, remote, eth, ipv6_ecn(ip6));
	case AXON_MODE_NATIVE:
		return to_native6(skb, ip6);
	default:
		return next(AXON_STAT_TO_HOST);
	}
}

/*
 * Whether a packet from a pod carries the pod's own address: src is the
 * endpoint entry of its source address, which must name the host-side veth
 * the packet arrived on, or another veth of the same pod (replies of one
 * attachment's address may leave by another's route). (Test runs without an
 * ingress device skip the device comparison.)
 */
static __always_inline int own_source(const struct __sk_buff *skb, const struct axon_endpoint *src)
{
	__u32 in = skb->ingress_ifindex, owner;
	const __u32 *pod, *src_pod;

	if (!src)
		return 0;
	if (!in || src->ifindex == in)
		return 1;
	owner = src->ifindex;
	pod = bpf_map_lookup_elem(&axon_devices, &in);
	src_pod = bpf_map_lookup_elem(&axon_devices, &owner);
	return pod && src_pod && *pod == *src_pod;
}

SEC("tc")
int axon_from_pod(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	const struct axon_endpoint *ep;
	enum parse kind;
	struct pkt p;

	kind = parse(skb, &p);
	switch (kind) {
	case PARSE_IPV4:
	case PARSE_IPV6:
		break;
	case PARSE_IPV6_LINK:
		/*
		 * The node's stack handles these, and may forward them (ND-typed
		 * ICMPv6 to a global address): the source must be link-local,
		 * unspecified (DAD) or the pod's own, like any other.
		 */
		if (!ipv6_link_source(&p.ip6->saddr, &p.ip6->daddr) && !own_source(skb, endpoint6(&p.ip6->saddr)))
			return drop(AXON_STAT_DROP_SPOOFED);
		return next(AXON_STAT_NON_IPV4);
	case PARSE_OTHER:
		return next(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}

	cfg = config();
	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);

	if (kind == PARSE_IPV4) {
		if (!own_source(skb, endpoint4(p.ip4->saddr)))
			return drop(AXON_STAT_DROP_SPOOFED);
		ep = endpoint4(p.ip4->daddr);
		if (ep)
			return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_FWD_LOCAL);
		return to_remote4(skb, cfg, p.eth, p.ip4);
	}
	if (!own_source(skb, endpoint6(&p.ip6->saddr)))
		return drop(AXON_STAT_DROP_SPOOFED);
	ep = endpoint6(&p.ip6->daddr);
	if (ep)
		return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_FWD_LOCAL);
	return to_remote6(skb, cfg, p.eth, p.ip6);
}

/*
 * A decapsulated frame for the node itself (a peer probing its health
 * address, a pod on another node talking to it) carries the sending side's
 * MAC as destination, so the stack would take it for another host's and
 * drop it. It is addressed to this node by the tunnel: mark it so.
 */
static __always_inline int overlay_to_host(struct __sk_buff *skb)
{
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	return next(AXON_STAT_OVERLAY_TO_HOST);
}

SEC("tc")
int axon_from_overlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	const struct axon_endpoint *ep;
	enum parse kind;
	struct pkt p;

	kind = parse(skb, &p);
	switch (kind) {
	case PARSE_IPV4:
	case PARSE_IPV6:
		break;
	case PARSE_IPV6_LINK:
	case PARSE_OTHER:
		return next(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}

	cfg = config();
	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);

	if (kind == PARSE_IPV4) {
		ep = endpoint4(p.ip4->daddr);
		if (!ep || !pod_src4(p.ip4->saddr))
			return overlay_to_host(skb);
		return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_OVERLAY_LOCAL);
	}
	ep = endpoint6(&p.ip6->daddr);
	if (!ep || !pod_src6(&p.ip6->saddr))
		return overlay_to_host(skb);
	return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_OVERLAY_LOCAL);
}

/* A VXLAN packet from the underlay up to the inner Ethernet header. */
struct axon_vxlan_frame {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct axon_vxlanhdr vx;
	struct ethhdr inner;
} __attribute__((packed));

/* What decapsulation removes: outer IPv4, UDP, VXLAN, inner Ethernet. */
#define AXON_VXLAN_OVERHEAD (sizeof(struct axon_vxlan_frame) - sizeof(struct ethhdr))

/* Kernel flags missing from older UAPI headers (since Linux 6.3). */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/*
 * Returns the VXLAN frame at the start of skb if it is one of Axon's for
 * this node: IPv4 without options or fragmentation, to the node's address
 * (which must be configured),
 * UDP to the VXLAN port, Axon's VNI. Only the outer headers and the inner
 * Ethernet header are guaranteed in the linear area.
 */
static __always_inline struct axon_vxlan_frame *vxlan_frame(struct __sk_buff *skb,
							    const struct axon_config *cfg)
{
	struct axon_vxlan_frame *f;

	/* Too short to be VXLAN (a bare ARP, say): nothing to pull. */
	if (skb->len < sizeof(*f))
		return NULL;
	f = linear(skb, sizeof(*f));
	if (!f)
		return NULL;
	if (f->eth.h_proto != bpf_htons(ETH_P_IP) || f->ip.version != 4 || f->ip.ihl != 5 ||
	    f->ip.protocol != IPPROTO_UDP || (f->ip.frag_off & bpf_htons(0x3fff)) != 0)
		return NULL;
	if (!cfg->node_ip4 || f->ip.daddr != cfg->node_ip4)
		return NULL;
	if (f->udp.dest != bpf_htons(AXON_VXLAN_PORT) || f->vx.flags != AXON_VXLAN_FLAG_VNI ||
	    f->vx.vni != bpf_htonl(AXON_TUNNEL_VNI << 8))
		return NULL;
	return f;
}

/*
 * Tunnel mode: decapsulates a VXLAN packet for a local pod and hands the
 * inner packet to the pod. Anything else returns NEXT for the kernel, where
 * axon_vxlan and axon_from_overlay take the rest of the overlay.
 */
static __always_inline int underlay_tunnel(struct __sk_buff *skb, const struct axon_config *cfg)
{
	const struct axon_endpoint *ep;
	struct axon_vxlan_frame *f = vxlan_frame(skb, cfg);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	void *data, *data_end;
	struct ethhdr *eth;
	__u8 inner_ecn;
	int outer_ce;
	__be16 proto;

	if (!f)
		return next(AXON_STAT_UNDERLAY_TO_HOST);
	outer_ce = (f->ip.tos & AXON_ECN_MASK) == AXON_ECN_CE;
	proto = f->inner.h_proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct axon_vxlan_frame *g = linear(skb, sizeof(*g) + sizeof(struct iphdr));
		struct iphdr *ip;

		if (!g)
			return next(AXON_STAT_UNDERLAY_TO_HOST);
		ip = (void *)(g + 1);
		if (ip->version != 4)
			return next(AXON_STAT_UNDERLAY_TO_HOST);
		ep = endpoint4(ip->daddr);
		if (ep && !from_owner4(ip->saddr, g->ip.saddr))
			return next(pod_src4(ip->saddr) ? AXON_STAT_UNDERLAY_FOREIGN :
							  AXON_STAT_UNDERLAY_TO_HOST);
		if (ep && ip->ttl <= 1)
			return drop(AXON_STAT_DROP_TTL);
		inner_ecn = ip->tos & AXON_ECN_MASK;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct axon_vxlan_frame *g = linear(skb, sizeof(*g) + sizeof(struct ipv6hdr));
		struct ipv6hdr *ip6;

		if (!g)
			return next(AXON_STAT_UNDERLAY_TO_HOST);
		ip6 = (void *)(g + 1);
		if (ip6->version != 6)
			return next(AXON_STAT_UNDERLAY_TO_HOST);
		ep = endpoint6(&ip6->daddr);
		if (ep && !from_owner6(&ip6->saddr, g->ip.saddr))
			return next(pod_src6(&ip6->saddr) ? AXON_STAT_UNDERLAY_FOREIGN :
							    AXON_STAT_UNDERLAY_TO_HOST);
		if (ep && ip6->hop_limit <= 1)
			return drop(AXON_STAT_DROP_TTL);
		inner_ecn = ipv6_ecn(ip6);
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	} else {
		return next(AXON_STAT_UNDERLAY_TO_HOST);
	}
	/*
	 * Congestion marked on the underlay (RFC 6040): copied into an
	 * ECN-capable inner packet; a packet that is not ECN-capable goes to
	 * the kernel, whose VXLAN device drops it as the RFC asks.
	 */
	if (!ep || (outer_ce && inner_ecn == 0))
		return next(AXON_STAT_UNDERLAY_TO_HOST);
	/* Removes what lies between the outer MAC header and the inner IP one. */
	if (bpf_skb_adjust_room(skb, -(__s32)AXON_VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags) < 0)
		return next(AXON_STAT_UNDERLAY_TO_HOST);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return drop(AXON_STAT_DROP_MALFORMED);
		if (outer_ce && inner_ecn != AXON_ECN_CE)
			ipv4_set_ce(ip);
		return deliver_local4(eth, ip, ep, AXON_STAT_OVERLAY_LOCAL);
	}
	struct ipv6hdr *ip6 = (void *)(eth + 1);

	if ((void *)(ip6 + 1) > data_end)
		return drop(AXON_STAT_DROP_MALFORMED);
	if (outer_ce && inner_ecn != AXON_ECN_CE)
		ipv6_set_ce(skb, ip6);
	eth->h_proto = proto;
	return deliver_local6(skb, eth, ip6, ep, AXON_STAT_OVERLAY_LOCAL);
}

/*
 * tcx ingress of the node's underlay device (the one holding the node
 * address). Packets from other nodes for local pods go straight to the
 * pods, skipping the node's stack: in tunnel mode decapsulated here rather
 * than by the UDP socket and axon_vxlan, in native mode instead of being
 * forwarded by the kernel. Frames for other hosts' MACs, and everything not
 * for a local pod, go on to the kernel.
 */
SEC("tc")
int axon_from_underlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg = config();
	const struct axon_endpoint *ep;
	enum parse kind;
	struct pkt p;

	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);
	if (skb->pkt_type != 0 /* PACKET_HOST */)
		return next(AXON_STAT_UNDERLAY_TO_HOST);
	if (cfg->mode == AXON_MODE_TUNNEL) {
		if (cfg->flags & AXON_CONFIG_GENEVE)
			return next(AXON_STAT_UNDERLAY_TO_HOST);
		return underlay_tunnel(skb, cfg);
	}

	/*
	 * Native mode: only packets from other nodes' pods (a remote block)
	 * skip the node's stack. Which node sent one cannot be told here (a
	 * routed underlay hides it); a local pod's address arriving from the
	 * underlay is spoofed and goes to the kernel like any other stranger.
	 */
	kind = parse(skb, &p);
	if (kind == PARSE_IPV4) {
		ep = endpoint4(p.ip4->daddr);
		if (ep && remote4(p.ip4->saddr))
			return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_OVERLAY_LOCAL);
	} else if (kind == PARSE_IPV6) {
		ep = endpoint6(&p.ip6->daddr);
		if (ep && remote6(&p.ip6->saddr))
			return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_OVERLAY_LOCAL);
	}
	/* Malformed frames too: the kernel judges the node's own traffic. */
	return next(AXON_STAT_UNDERLAY_TO_HOST);
}

AXON_BPF_LICENSE();

/*
 * tcx egress of axon_vxlan: packets the node's own stack routes into the
 * overlay (the node, or masqueraded traffic, towards a remote pod) get the
 * tunnel endpoint of the destination's block. Without one the flow-based
 * device could not send them, so they are dropped and counted. IPv6 for the
 * link itself (ND, link-local, multicast) returns NEXT as in the other
 * programs; without a tunnel key the device drops it too.
 */
SEC("tc")
int axon_to_overlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	const struct axon_remote *remote;
	enum parse kind;
	struct pkt p;

	kind = parse(skb, &p);
	switch (kind) {
	case PARSE_IPV4:
	case PARSE_IPV6:
		break;
	case PARSE_IPV6_LINK:
		return next(AXON_STAT_NON_IPV4);
	case PARSE_OTHER:
		return drop(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}
	cfg = config();
	if (!cfg || cfg->mode != AXON_MODE_TUNNEL)
		return drop(AXON_STAT_UNCONFIGURED);
	if (kind == PARSE_IPV4)
		remote = remote4(p.ip4->daddr);
	else
		remote = remote6(&p.ip6->daddr);
	if (!remote || set_tunnel(skb, cfg, remote) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	count(AXON_STAT_FWD_TUNNEL_DEVICE);
	return AXON_TCX_NEXT;
}
