/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * VXLAN encapsulation in the program: a pod's packet to another node's
 * block leaves by the underlay device directly, or, when it cannot (Geneve,
 * no node address, no route, too big for the path), through the tunnel
 * device with a tunnel key.
 */
#ifndef AXON_ENCAP_H
#define AXON_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/counters.h"
#include "axon/datapath.h"
#include "axon/fib.h"
#include "axon/tunnel.h"

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

/* What encap_vxlan did; never a tcx verdict, the caller picks that. */
enum axon_encap {
	/* Encapsulated: send it to the next hop encap_vxlan filled in. */
	AXON_ENCAP_DONE,
	/* Not encapsulated, nothing changed: use the tunnel device. */
	AXON_ENCAP_DEVICE,
	/* The packet was changed half-way and cannot be sent: drop it. */
	AXON_ENCAP_DROP,
};

/* Where an encapsulated packet goes: the underlay device and its next hop. */
struct axon_next_hop {
	__u32 ifindex;
	struct bpf_redir_neigh nh;
};

/*
 * Encapsulates the frame in VXLAN to remote here, as axon_vxlan would, for
 * the underlay device the node's FIB picks for the remote node (out): the
 * packet skips the VXLAN device, its per-packet route lookup and the node's
 * netfilter output path.
 */
static __always_inline enum axon_encap encap_vxlan(struct __sk_buff *skb,
						   const struct axon_config *cfg,
						   const struct axon_remote *remote,
						   struct ethhdr *eth, __u8 ecn,
						   struct axon_next_hop *out)
{
	const __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
			    BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			    BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr));
	__u32 inner_len = skb->len - sizeof(struct ethhdr), outer_len;
	__be16 outer_proto = bpf_htons(ETH_P_IP);
	struct axon_vxlan_encap h;
	struct bpf_fib_lookup fib;
	struct iphdr ip;
	__u32 hash;
	__s64 csum;
	long rc;

	if (!cfg->node_ip4 || (cfg->flags & AXON_CONFIG_GENEVE))
		return AXON_ENCAP_DEVICE;
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
		return AXON_ENCAP_DEVICE;

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
		return AXON_ENCAP_DEVICE;
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
		return AXON_ENCAP_DEVICE;
	/* The frame's own Ethernet header is now the outer one. */
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &h, sizeof(h), 0) < 0 ||
	    bpf_skb_store_bytes(skb, __builtin_offsetof(struct ethhdr, h_proto), &outer_proto,
				sizeof(outer_proto), 0) < 0)
		return AXON_ENCAP_DROP;
	__builtin_memset(&out->nh, 0, sizeof(out->nh));
	out->nh.nh_family = AXON_AF_INET;
	out->nh.ipv4_nh = fib.ipv4_dst;
	out->ifindex = fib.ifindex;
	return AXON_ENCAP_DONE;
}

/*
 * Sends a pod's packet to remote's node: encapsulated here if it can be, or
 * else through the tunnel device (axon_vxlan or axon_geneve) with a tunnel
 * key. The device sets the outer ECN field from the inner one itself (an
 * inner CE as ECT(0), as Linux tunnels do). A subprogram of its own: the
 * outer headers it builds live in its own stack frame, not in that of the
 * program, which shares the 512-byte stack limit with the global functions
 * it calls (axon_lb_new_flow, axon_reject).
 */
static __noinline int to_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				const struct axon_remote *remote, struct ethhdr *eth, __u8 ecn)
{
	struct axon_next_hop out;

	switch (encap_vxlan(skb, cfg, remote, eth, ecn, &out)) {
	case AXON_ENCAP_DONE:
		count(AXON_STAT_FWD_TUNNEL);
		return bpf_redirect_neigh(out.ifindex, &out.nh, sizeof(out.nh), 0);
	case AXON_ENCAP_DROP:
		return drop(AXON_STAT_DROP_TUNNEL);
	case AXON_ENCAP_DEVICE:
		break;
	}
	if (set_tunnel(skb, cfg, remote) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	count(AXON_STAT_FWD_TUNNEL_DEVICE);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

#endif /* AXON_ENCAP_H */
