/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Header fields a router rewrites, with their checksums: TTL / hop limit
 * and ECN congestion marks (RFC 3168, RFC 6040).
 */
#ifndef AXON_CSUM_H
#define AXON_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* ECN codepoints (RFC 3168), the low two bits of TOS / traffic class. */
#define AXON_ECN_MASK 0x3
#define AXON_ECN_CE 0x3

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

/*
 * Decrements the hop limit. IPv6 has no header checksum, but a packet whose
 * device supplied a checksum of the whole packet (CHECKSUM_COMPLETE, from a
 * NIC on the underlay) gets that sum updated, as the kernel's forwarding
 * would; for any other packet bpf_csum_update does nothing.
 */
static __always_inline void ipv6_dec_hop_limit(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	__be32 from, to; /* payload length, next header, hop limit */

	__builtin_memcpy(&from, (void *)ip6 + 4, sizeof(from));
	ip6->hop_limit--;
	__builtin_memcpy(&to, (void *)ip6 + 4, sizeof(to));
	bpf_csum_update(skb, bpf_csum_diff(&from, sizeof(from), &to, sizeof(to), 0));
}

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

#endif /* AXON_CSUM_H */
