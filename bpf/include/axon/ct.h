/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The connection tracker (axon_ct) and the address translation it drives:
 * a packet's tuple, the entry it matches, and the rewrite of its addresses
 * and ports (with their checksums) to the entry's tuple. The rewrite does
 * not care which direction it serves: service DNAT, its reverse, and later
 * SNAT are the same operation on different entries.
 */
#ifndef AXON_CT_H
#define AXON_CT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/datapath.h"
#include "axon/maps.h"
#include "axon/parse.h"

/* TCP header flags (byte 13 of the header). */
#define AXON_TCP_FIN 0x01
#define AXON_TCP_SYN 0x02
#define AXON_TCP_RST 0x04

/* Where a TCP or UDP packet's transport header is, and its TCP flags. */
struct axon_l4 {
	__u32 off; /* of the TCP/UDP header, from the start of the frame */
	__u8 tcp_flags;
};

/* Writes ip4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static __always_inline void ct_map4(__u8 *dst, __be32 ip4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4, sizeof(ip4));
}

static __always_inline int ipv6_v4mapped(const struct in6_addr *a)
{
	const __u32 *w = a->in6_u.u6_addr32;

	return !(w[0] | w[1]) && w[2] == bpf_htonl(0xffff);
}

/*
 * Reads the ports of the transport header at off (and the flags of a TCP
 * one): from the linear area when it holds them, as it does for most
 * packets, else as copies. Packet pointers stay valid either way.
 */
static __always_inline int ct_read_ports(struct __sk_buff *skb, __u32 off, __u8 proto, __be16 ports[2],
					 __u8 *tcp_flags)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __u8 *l4;

	*tcp_flags = 0;
	/* off is at most 14 + 60 (IPv4 options) or 14 + 40 (IPv6). */
	if (off > sizeof(struct ethhdr) + 60)
		return -1;
	l4 = data + off;
	if ((void *)(l4 + 14) <= data_end) {
		__builtin_memcpy(ports, l4, 2 * sizeof(ports[0]));
		if (proto == IPPROTO_TCP)
			*tcp_flags = l4[13];
		return 0;
	}
	if (bpf_skb_load_bytes(skb, off, ports, 2 * sizeof(ports[0])) < 0)
		return -1;
	if (proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, off + 13, tcp_flags, 1) < 0)
		return -1;
	return 0;
}

/*
 * Whether a REPLY entry may have source port port: none has unless
 * axon_ct_ports says so, which spares most packets that are no reply the
 * tracker's lookup.
 */
static __always_inline int ct_reply_port(__be16 port)
{
	__u32 key = bpf_ntohs(port);
	const __u32 *v = bpf_map_lookup_elem(&axon_ct_ports, &key);

	return v && *v;
}

/* Notes that a REPLY entry with source port port is about to be added. */
static __always_inline void ct_mark_reply_port(__be16 port)
{
	__u32 key = bpf_ntohs(port);
	__u32 *v = bpf_map_lookup_elem(&axon_ct_ports, &key);

	if (v && !*v)
		*v = 1;
}

/*
 * Fills k with the packet's tuple, direction FORWARD, and l with where its
 * ports are. Returns 0, or -1 for packets the tracker leaves alone: neither
 * TCP nor UDP, IPv4 fragments, IPv6 with extension headers before the
 * transport header or with IPv4-mapped addresses, a transport header cut
 * short.
 */
static __always_inline int ct_tuple(struct __sk_buff *skb, const struct pkt *p, enum parse kind,
				    struct axon_ct_key *k, struct axon_l4 *l)
{
	__be16 ports[2];
	__u8 proto;

	__builtin_memset(k, 0, sizeof(*k));
	if (kind == PARSE_IPV4) {
		const struct iphdr *ip = p->ip4;

		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return -1;
		proto = ip->protocol;
		l->off = sizeof(struct ethhdr) + ip->ihl * 4;
		ct_map4(k->saddr, ip->saddr);
		ct_map4(k->daddr, ip->daddr);
	} else {
		const struct ipv6hdr *ip6 = p->ip6;

		/* IPv4-mapped addresses name IPv4 state: not IPv6's to touch. */
		if (ipv6_v4mapped(&ip6->saddr) || ipv6_v4mapped(&ip6->daddr))
			return -1;
		proto = ip6->nexthdr;
		l->off = sizeof(struct ethhdr) + sizeof(*ip6);
		__builtin_memcpy(k->saddr, &ip6->saddr, sizeof(k->saddr));
		__builtin_memcpy(k->daddr, &ip6->daddr, sizeof(k->daddr));
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	if (ct_read_ports(skb, l->off, proto, ports, &l->tcp_flags) < 0)
		return -1;
	k->sport = ports[0];
	k->dport = ports[1];
	k->proto = proto;
	k->dir = AXON_CT_FORWARD;
	return 0;
}

/*
 * Notes a packet of an entry's flow: the time (at most once per
 * AXON_CT_REFRESH_NS, so busy flows do not bounce the cache line between
 * CPUs) and, once each, that the entry saw traffic and that TCP closes.
 */
static __always_inline void ct_touch(struct axon_ct_entry *e, const struct axon_ct_key *k,
				     const struct axon_l4 *l)
{
	__u64 now = bpf_ktime_get_coarse_ns(); /* a tick behind at most: to the second is enough */
	__u32 flags = AXON_CT_F_SEEN;

	if (k->proto == IPPROTO_TCP && (l->tcp_flags & (AXON_TCP_FIN | AXON_TCP_RST)))
		flags |= AXON_CT_F_TCP_CLOSING;
	/* Not atomic (v1 has no atomic OR): a bit lost to a race is set again
	 * by the flow's next packet. */
	if ((e->flags & flags) != flags)
		e->flags |= flags;
	/* A SYN on a closed tuple opens it again (a client reusing its port
	 * soon after): the closing timeout no longer applies. */
	else if (k->proto == IPPROTO_TCP && (e->flags & AXON_CT_F_TCP_CLOSING) &&
		 (l->tcp_flags & (AXON_TCP_SYN | AXON_TCP_FIN | AXON_TCP_RST)) == AXON_TCP_SYN)
		e->flags &= ~AXON_CT_F_TCP_CLOSING;
	if (now - e->last_seen > AXON_CT_REFRESH_NS)
		e->last_seen = now;
}

/* Checksum flags of the transport protocol for bpf_l4_csum_replace. */
static __always_inline __u64 l4_csum_flags(__u8 proto, enum parse kind)
{
	/* UDP over IPv4 may carry no checksum (0): it stays so. */
	__u64 f = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	return kind == PARSE_IPV6 ? f | BPF_F_IPV6 : f;
}

/*
 * Adjusts the transport checksum for a change of the pseudo header
 * (addresses) or of a port. BPF_F_IPV6 (Linux 6.16) keeps a packet's
 * CHECKSUM_COMPLETE sum right; an older kernel refuses the flag, and then
 * gets the call without it.
 */
static __always_inline long l4_csum(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to, __u64 flags)
{
	long rc = bpf_l4_csum_replace(skb, off, from, to, flags);

	if (rc < 0 && (flags & BPF_F_IPV6))
		rc = bpf_l4_csum_replace(skb, off, from, to, flags & ~BPF_F_IPV6);
	return rc;
}

/* Adds to a one's complement sum the change of a 32-bit word. */
static __always_inline __u64 csum_word(__u64 sum, __u32 from, __u32 to)
{
	return sum + (__u32)~from + to;
}

/* Folds a one's complement sum to 32 bits (a __wsum, as helpers take it). */
static __always_inline __u32 csum_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (sum & 0xffffffff) + (sum >> 32);
}

/* Updates an IPv4 header checksum for a change of diff (RFC 1624). */
static __always_inline void ipv4_csum_diff(struct iphdr *ip, __u32 diff)
{
	__u32 sum = (__u16)~ip->check;

	diff = (diff & 0xffff) + (diff >> 16);
	sum += (diff & 0xffff) + (diff >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~(__u16)sum;
}

/*
 * Writes e's addresses into the IP header at data (whose linear area ends
 * at data_end) and returns their one's complement change, 0 if they are the
 * same; the IPv4 header checksum follows. -1: the header is not there.
 * A subprogram of its own (static, so verified with its caller's
 * pointers): its address buffers then live in its own stack frame, not in
 * the program's, which shares the 512-byte limit with the global
 * functions the program calls (axon_lb_new_flow, axon_reject).
 */
static __noinline __s64 nat_addrs(void *data, void *data_end, enum parse kind,
				  const struct axon_ct_entry *e)
{
	__u64 sum = 0;

	if (kind == PARSE_IPV4) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		__be32 s, d;

		if ((void *)(ip + 1) > data_end)
			return -1;
		__builtin_memcpy(&s, e->to_saddr + 12, sizeof(s));
		__builtin_memcpy(&d, e->to_daddr + 12, sizeof(d));
		if (ip->saddr == s && ip->daddr == d)
			return 0;
		sum = csum_word(csum_word(0, ip->saddr, s), ip->daddr, d);
		ip->saddr = s;
		ip->daddr = d;
		ipv4_csum_diff(ip, csum_fold32(sum));
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
		__u32 from[8], to[8], differ = 0;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(from, &ip6->saddr, sizeof(from)); /* saddr, daddr */
		__builtin_memcpy(to, e->to_saddr, 16);
		__builtin_memcpy(to + 4, e->to_daddr, 16);
		for (int i = 0; i < 8; i++) {
			sum = csum_word(sum, from[i], to[i]);
			differ |= from[i] ^ to[i];
		}
		if (!differ)
			return 0;
		__builtin_memcpy(&ip6->saddr, to, sizeof(to));
	}
	return csum_fold32(sum);
}

/*
 * Rewrites the packet whose tuple is k to e's tuple: addresses, ports, the
 * IPv4 header checksum and the TCP/UDP checksum. The addresses and ports
 * are written in place (pulled into the linear area first if they are
 * not); the transport checksum takes one helper call for the addresses
 * (the pseudo header) and one for the ports. Returns 0, or negative if the
 * packet could not be rewritten (then it must be dropped: it may be
 * half-written). Invalidates every packet pointer.
 */
static __always_inline int ct_nat(struct __sk_buff *skb, enum parse kind, const struct axon_l4 *l,
				  const struct axon_ct_key *k, const struct axon_ct_entry *e)
{
	__u32 csum_off = l->off + (k->proto == IPPROTO_TCP ? 16 : 6);
	__u64 l4f = l4_csum_flags(k->proto, kind);
	__u32 off = l->off, from, to;
	void *data, *data_end;
	__u8 *ports;
	__s64 addrs;

	/* off is at most 14 + 60 (IPv4 options) or 14 + 40 (IPv6). */
	if (off > sizeof(struct ethhdr) + 60 || !linear(skb, off + sizeof(from)))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ports = data + off;
	if ((void *)(ports + sizeof(from)) > data_end)
		return -1;
	addrs = nat_addrs(data, data_end, kind, e);
	if (addrs < 0)
		return -1;
	__builtin_memcpy(&from, ports, sizeof(from)); /* source port, destination port */
	__builtin_memcpy(&to, &e->to_sport, sizeof(to)); /* to_sport, to_dport */
	if (from != to)
		__builtin_memcpy(ports, &to, sizeof(to));
	/* Both calls invalidate the packet pointers: the writes are done. */
	if (addrs && l4_csum(skb, csum_off, 0, addrs, l4f | BPF_F_PSEUDO_HDR) < 0)
		return -1;
	if (from != to && l4_csum(skb, csum_off, 0, csum_fold32(csum_word(0, from, to)), l4f) < 0)
		return -1;
	return 0;
}

/* Re-finds the headers after a rewrite; returns kind, or PARSE_MALFORMED. */
static __always_inline enum parse reparse(struct __sk_buff *skb, struct pkt *p, enum parse kind)
{
	return kind == PARSE_IPV4 ? parse_ipv4(skb, p) : parse_ipv6(skb, p);
}

/*
 * Translates a packet whose tuple k (with its direction) has an entry.
 * Returns 1 if it did, with p pointing at the rewritten headers, 0 if k has
 * no entry (nothing changed), -1 if the rewrite failed (drop the packet).
 */
static __always_inline int ct_apply(struct __sk_buff *skb, struct pkt *p, enum parse kind,
				    const struct axon_ct_key *k, const struct axon_l4 *l)
{
	struct axon_ct_entry *e = bpf_map_lookup_elem(&axon_ct, k);

	if (!e)
		return 0;
	ct_touch(e, k, l);
	if (ct_nat(skb, kind, l, k, e) < 0 || reparse(skb, p, kind) != kind)
		return -1;
	return 1;
}

/*
 * Reverse translation before a packet is delivered to a local pod: a
 * packet matching a REPLY entry (a backend answering a client that
 * connected to a service) leaves with the entry's tuple, the frontend as
 * its source. Every path that delivers to a pod calls it. Returns 0 with p
 * pointing at the (maybe rewritten) headers, or -1 if a rewrite failed
 * (drop the packet, counting AXON_STAT_DROP_NAT).
 */
static __always_inline int ct_reverse(struct __sk_buff *skb, const struct axon_config *cfg, struct pkt *p,
				      enum parse kind)
{
	struct axon_ct_key k;
	struct axon_l4 l;

	if (!(cfg->flags & AXON_CONFIG_LB) || ct_tuple(skb, p, kind, &k, &l) < 0 || !ct_reply_port(k.sport))
		return 0;
	k.dir = AXON_CT_REPLY;
	return ct_apply(skb, p, kind, &k, &l) < 0 ? -1 : 0;
}

#endif /* AXON_CT_H */
