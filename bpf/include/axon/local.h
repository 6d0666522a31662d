/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Local delivery: handing a packet to a pod on this node, as its router.
 */
#ifndef AXON_LOCAL_H
#define AXON_LOCAL_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#include "axon/counters.h"
#include "axon/csum.h"
#include "axon/datapath.h"

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

static __always_inline int deliver_local6(struct __sk_buff *skb, struct ethhdr *eth,
					  struct ipv6hdr *ip6, const struct axon_endpoint *ep,
					  __u32 stat)
{
	if (ip6->hop_limit <= 1)
		return drop(AXON_STAT_DROP_TTL);
	ipv6_dec_hop_limit(skb, ip6);
	return to_pod(eth, ep, stat);
}

#endif /* AXON_LOCAL_H */
