/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Refusing a connection at once, as kube-proxy's REJECT does: a pod's new
 * connection to a frontend without backends is answered instead of being
 * left to time out. The pod's own packet is turned into the answer in
 * place and handed back to it: a TCP segment becomes a reset (RFC 9293
 * 3.10.7.1), a UDP datagram an ICMP or ICMPv6 port unreachable quoting its
 * IP header and first 8 bytes (RFC 792, RFC 4443), from the frontend's
 * address. Every header is written whole, checksums computed afresh.
 */
#ifndef AXON_REJECT_H
#define AXON_REJECT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/ct.h"
#include "axon/parse.h"

#define AXON_TCP_ACK 0x10
#define AXON_TTL_REJECT 64
#define AXON_ICMP_DEST_UNREACH 3
#define AXON_ICMP_PORT_UNREACH 3
#define AXON_ICMPV6_DEST_UNREACH 1
#define AXON_ICMPV6_PORT_UNREACH 4
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

/* A TCP header without options, bytes as on the wire. */
struct axon_tcp {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 doff; /* data offset << 4 */
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urg;
};

/* An ICMP or ICMPv6 error header; the rest is the quoted packet. */
struct axon_icmp {
	__u8 type;
	__u8 code;
	__be16 check;
	__be32 unused;
};

struct axon_rst4 {
	struct iphdr ip;
	struct axon_tcp tcp;
};

struct axon_rst6 {
	struct ipv6hdr ip6;
	struct axon_tcp tcp;
};

struct axon_unreach4 {
	struct iphdr ip;
	struct axon_icmp icmp;
	struct iphdr orig;
	__u8 orig_l4[8];
};

struct axon_unreach6 {
	struct ipv6hdr ip6;
	struct axon_icmp icmp;
	struct ipv6hdr orig;
	__u8 orig_l4[8];
};

/* The rest of a pseudo header after its two IPv6 addresses (RFC 8200 8.1). */
struct axon_pseudo6_tail {
	__be32 len;
	__u8 zero[3];
	__u8 nexthdr;
};

/* The IPv4 pseudo header (RFC 9293 3.1). */
struct axon_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* Folds a 32-bit one's-complement sum into a checksum field's value. */
static __always_inline __be16 csum_finish16(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~(__u16)s;
}

/* Sums len bytes of buf (len a multiple of 4) onto seed; negative on error. */
static __always_inline __s64 csum_add_buf(const void *buf, __u32 len, __s64 seed)
{
	if (seed < 0)
		return seed;
	return bpf_csum_diff(NULL, 0, (__be32 *)buf, len, (__u32)seed);
}

/*
 * Replaces the frame after its Ethernet header with len bytes of hdr, the
 * frame's new length becoming exactly that.
 */
static __always_inline int reject_write(struct __sk_buff *skb, const void *hdr, __u32 len)
{
	if (bpf_skb_change_tail(skb, sizeof(struct ethhdr) + len, 0) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, sizeof(struct ethhdr), hdr, len, BPF_F_INVALIDATE_HASH) < 0 ? -1 : 0;
}

/*
 * The reset's sequence and acknowledgment numbers for the segment th of
 * payload bytes (RFC 9293 3.10.7.1): a segment with an ACK gets a reset at
 * its acknowledged sequence number, anything else a reset acknowledging it
 * (a SYN: its sequence number + 1).
 */
static __always_inline void rst_numbers(struct axon_tcp *rst, const struct axon_tcp *th, __u32 payload)
{
	__u32 seg_len = payload;

	if (th->flags & AXON_TCP_ACK) {
		rst->seq = th->ack;
		rst->ack = 0;
		rst->flags = AXON_TCP_RST;
		return;
	}
	if (th->flags & AXON_TCP_SYN)
		seg_len++;
	if (th->flags & AXON_TCP_FIN)
		seg_len++;
	rst->seq = 0;
	rst->ack = bpf_htonl(bpf_ntohl(th->seq) + seg_len);
	rst->flags = AXON_TCP_RST | AXON_TCP_ACK;
}

/* Fills the ports, offset and window of a reset to th. */
static __always_inline void rst_header(struct axon_tcp *rst, const struct axon_tcp *th)
{
	rst->sport = th->dport;
	rst->dport = th->sport;
	rst->doff = 5 << 4;
	rst->window = 0;
	rst->check = 0;
	rst->urg = 0;
}

static __always_inline void ip4_reply(struct iphdr *ip, const struct iphdr *orig, __u8 proto, __u16 len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(len);
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = AXON_TTL_REJECT;
	ip->protocol = proto;
	ip->saddr = orig->daddr;
	ip->daddr = orig->saddr;
}

static __always_inline void ip6_reply(struct ipv6hdr *ip6, const struct ipv6hdr *orig, __u8 proto, __u16 len)
{
	__builtin_memset(ip6, 0, sizeof(*ip6));
	ip6->version = 6;
	ip6->payload_len = bpf_htons(len);
	ip6->nexthdr = proto;
	ip6->hop_limit = AXON_TTL_REJECT;
	ip6->saddr = orig->daddr;
	ip6->daddr = orig->saddr;
}

/* The pseudo-header sum of a reply ip6 carrying len bytes of proto. */
static __always_inline __s64 pseudo6_sum(const struct ipv6hdr *ip6, __u8 proto, __u16 len)
{
	struct axon_pseudo6_tail tail = { .len = bpf_htonl(len), .nexthdr = proto };

	return csum_add_buf(&tail, sizeof(tail), csum_add_buf(&ip6->saddr, 32, 0));
}

static __always_inline int reject_tcp4(struct __sk_buff *skb, const struct axon_l4 *l)
{
	struct axon_pseudo4 ph = { .proto = IPPROTO_TCP, .len = bpf_htons(sizeof(struct axon_tcp)) };
	struct axon_rst4 r;
	struct axon_tcp th;
	struct iphdr orig;
	__u32 payload;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &orig, sizeof(orig)) < 0 ||
	    bpf_skb_load_bytes(skb, l->off, &th, sizeof(th)) < 0)
		return -1;
	payload = bpf_ntohs(orig.tot_len) - orig.ihl * 4 - (th.doff >> 4) * 4;
	if (payload > 0xffff)
		return -1;
	ip4_reply(&r.ip, &orig, IPPROTO_TCP, sizeof(r));
	r.ip.check = csum_finish16(csum_add_buf(&r.ip, sizeof(r.ip), 0));
	rst_header(&r.tcp, &th);
	rst_numbers(&r.tcp, &th, payload);
	ph.saddr = r.ip.saddr;
	ph.daddr = r.ip.daddr;
	r.tcp.check = csum_finish16(csum_add_buf(&r.tcp, sizeof(r.tcp), csum_add_buf(&ph, sizeof(ph), 0)));
	return reject_write(skb, &r, sizeof(r));
}

static __always_inline int reject_tcp6(struct __sk_buff *skb, const struct axon_l4 *l)
{
	struct axon_rst6 r;
	struct axon_tcp th;
	struct ipv6hdr orig;
	__u32 payload;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &orig, sizeof(orig)) < 0 ||
	    bpf_skb_load_bytes(skb, l->off, &th, sizeof(th)) < 0)
		return -1;
	payload = bpf_ntohs(orig.payload_len) - (th.doff >> 4) * 4;
	if (payload > 0xffff)
		return -1;
	ip6_reply(&r.ip6, &orig, IPPROTO_TCP, sizeof(r.tcp));
	rst_header(&r.tcp, &th);
	rst_numbers(&r.tcp, &th, payload);
	r.tcp.check = csum_finish16(csum_add_buf(&r.tcp, sizeof(r.tcp), pseudo6_sum(&r.ip6, IPPROTO_TCP, sizeof(r.tcp))));
	return reject_write(skb, &r, sizeof(r));
}

static __always_inline int reject_udp4(struct __sk_buff *skb, const struct axon_l4 *l)
{
	struct axon_unreach4 u;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &u.orig, sizeof(u.orig)) < 0 ||
	    bpf_skb_load_bytes(skb, l->off, u.orig_l4, sizeof(u.orig_l4)) < 0)
		return -1;
	ip4_reply(&u.ip, &u.orig, IPPROTO_ICMP, sizeof(u));
	u.ip.check = csum_finish16(csum_add_buf(&u.ip, sizeof(u.ip), 0));
	u.icmp.type = AXON_ICMP_DEST_UNREACH;
	u.icmp.code = AXON_ICMP_PORT_UNREACH;
	u.icmp.check = 0;
	u.icmp.unused = 0;
	sum = csum_add_buf(&u.icmp, sizeof(u) - sizeof(u.ip), 0);
	u.icmp.check = csum_finish16(sum);
	return reject_write(skb, &u, sizeof(u));
}

static __always_inline int reject_udp6(struct __sk_buff *skb, const struct axon_l4 *l)
{
	const __u16 len = sizeof(struct axon_unreach6) - sizeof(struct ipv6hdr);
	struct axon_unreach6 u;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &u.orig, sizeof(u.orig)) < 0 ||
	    bpf_skb_load_bytes(skb, l->off, u.orig_l4, sizeof(u.orig_l4)) < 0)
		return -1;
	ip6_reply(&u.ip6, &u.orig, IPPROTO_ICMPV6, len);
	u.icmp.type = AXON_ICMPV6_DEST_UNREACH;
	u.icmp.code = AXON_ICMPV6_PORT_UNREACH;
	u.icmp.check = 0;
	u.icmp.unused = 0;
	sum = csum_add_buf(&u.icmp, len, pseudo6_sum(&u.ip6, IPPROTO_ICMPV6, len));
	u.icmp.check = csum_finish16(sum);
	return reject_write(skb, &u, sizeof(u));
}

/*
 * Turns the packet k (TCP or UDP, as ct_tuple found it, l where its
 * transport header is) into its refusal, addressed back to its sender.
 * Returns 0, or -1 if there is none to send: a reset (never answered), an
 * IPv4 header with options (never quoted or echoed), a packet that could
 * not be rewritten. Global (not inlined): its buffers take no stack of the
 * caller's, and the verifier checks it once. Invalidates every packet
 * pointer: the caller parses again.
 */
__noinline int axon_reject(struct __sk_buff *skb, const struct axon_ct_key *k, const struct axon_l4 *l)
{
	__u8 vihl;

	if (!skb || !k || !l)
		return -1;
	if (k->proto == IPPROTO_TCP && (l->tcp_flags & AXON_TCP_RST))
		return -1;
	if (ipv6_v4mapped((const struct in6_addr *)k->daddr)) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &vihl, 1) < 0 || vihl != 0x45)
			return -1;
		return k->proto == IPPROTO_TCP ? reject_tcp4(skb, l) : reject_udp4(skb, l);
	}
	return k->proto == IPPROTO_TCP ? reject_tcp6(skb, l) : reject_udp6(skb, l);
}

#endif /* AXON_REJECT_H */
