/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Parsing: the Ethernet and IP headers of a frame, made linear, and which
 * IPv6 the node must see itself.
 */
#ifndef AXON_PARSE_H
#define AXON_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* ICMPv6 types of neighbour discovery (RFC 4861): RS, RA, NS, NA, redirect. */
#define AXON_ND_FIRST 133
#define AXON_ND_LAST 137

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

#endif /* AXON_PARSE_H */
