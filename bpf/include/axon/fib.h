/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Native forwarding: routing a pod's packet to another node's block through
 * the node's FIB (routes for remote blocks are installed via netlink).
 */
#ifndef AXON_FIB_H
#define AXON_FIB_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/counters.h"
#include "axon/csum.h"

/* <sys/socket.h> is not for BPF targets. */
#define AXON_AF_INET 2
#define AXON_AF_INET6 10

/* Traffic class and flow label: the 28 low bits of the first word. */
#define AXON_IPV6_FLOWINFO_MASK 0x0FFFFFFF

/*
 * Routes through the node's FIB and lets redirect_neigh resolve the next
 * hop's MAC. FWD_DISABLED (forwarding off), local or unreachable
 * destinations go to the kernel.
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

#endif /* AXON_FIB_H */
