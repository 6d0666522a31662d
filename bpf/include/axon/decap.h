/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * VXLAN decapsulation in the program: a packet from another node's pod for
 * a pod on this node is stripped of its outer headers on the underlay and
 * delivered, instead of going through the node's UDP socket and axon_vxlan.
 */
#ifndef AXON_DECAP_H
#define AXON_DECAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/counters.h"
#include "axon/csum.h"
#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/local.h"
#include "axon/maps.h"
#include "axon/parse.h"
#include "axon/tunnel.h"

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
 * Returns the VXLAN frame at the start of skb if it is one of Axon's for
 * this node: IPv4 without options or fragmentation, to the node's address
 * (which must be configured), UDP to the VXLAN port, Axon's VNI. Only the
 * outer headers and the inner Ethernet header are guaranteed in the linear
 * area.
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
 * Decapsulates a VXLAN packet for a local pod and hands the inner packet to
 * the pod (reverse-translated if it answers a service connection the pod
 * made). Anything else returns NEXT for the kernel, where axon_vxlan and
 * axon_from_overlay take the rest of the overlay.
 */
static __always_inline int decap_vxlan(struct __sk_buff *skb, const struct axon_config *cfg)
{
	const struct axon_endpoint *ep;
	struct axon_vxlan_frame *f = vxlan_frame(skb, cfg);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	void *data, *data_end;
	struct ethhdr *eth;
	__u8 inner_ecn;
	struct pkt p = {};
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
		p.eth = eth;
		p.ip4 = ip;
		if (ct_reverse(skb, cfg, &p, PARSE_IPV4) < 0)
			return drop(AXON_STAT_DROP_NAT);
		return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_OVERLAY_LOCAL);
	}
	struct ipv6hdr *ip6 = (void *)(eth + 1);

	if ((void *)(ip6 + 1) > data_end)
		return drop(AXON_STAT_DROP_MALFORMED);
	if (outer_ce && inner_ecn != AXON_ECN_CE)
		ipv6_set_ce(skb, ip6);
	eth->h_proto = proto;
	p.eth = eth;
	p.ip6 = ip6;
	if (ct_reverse(skb, cfg, &p, PARSE_IPV6) < 0)
		return drop(AXON_STAT_DROP_NAT);
	return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_OVERLAY_LOCAL);
}

#endif /* AXON_DECAP_H */
