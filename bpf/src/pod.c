// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * axon_from_pod: a tc (direct-action) filter on the ingress of every pod's
 * host-side veth (lxc*), for the packets the pod sends. Loaded once per
 * node and shared by all pods: everything per pod lives in maps, so wiring
 * a pod is a map write and an attach, never a compile or load.
 *
 * A packet from a pod must carry the pod's own source address. Then, to a
 * pod on this node it is delivered straight into that pod; to another
 * node's block it is encapsulated (tunnel mode) or routed by the FIB
 * (native mode); anything else goes to the kernel, which routes and
 * masquerades it. IPv6 the node must see itself (neighbour discovery,
 * link-local or multicast destinations) and non-IP frames go to the kernel
 * too. A TCP or UDP packet to a service frontend is first translated to one
 * of its backends (axon/lb.h), and a reply of such a flow back to the
 * frontend, then forwarded as any other. Its companion axon_to_pod (below)
 * sits on the same veth's egress.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#include "axon/counters.h"
#include "axon/csum.h"
#include "axon/datapath.h"
#include "axon/encap.h"
#include "axon/fib.h"
#include "axon/lb.h"
#include "axon/license.h"
#include "axon/local.h"
#include "axon/maps.h"
#include "axon/parse.h"

/*
 * The enums are only used as constants, which clang does not describe in
 * BTF. These unused pointers in a section no program references make clang
 * emit them so that bpf2go -type can export them (from this object, which
 * carries the Go types of the shared layout); the loader ignores the
 * section.
 */
const enum axon_stat *__axon_stat_btf __attribute__((unused, section(".axon_btf")));
const enum axon_mode *__axon_mode_btf __attribute__((unused, section(".axon_btf")));
const enum axon_lb_scope *__axon_lb_scope_btf __attribute__((unused, section(".axon_btf")));
const enum axon_ct_dir *__axon_ct_dir_btf __attribute__((unused, section(".axon_btf")));

/*
 * Only pod blocks of other nodes are forwarded to remotes. Everything else
 * (the node, other hosts, the outside) takes the kernel's path, where
 * netfilter masquerades pod sources leaving the cluster.
 */
static __always_inline int to_remote4(struct __sk_buff *skb, const struct axon_config *cfg,
				      struct ethhdr *eth, struct iphdr *ip)
{
	const struct axon_remote *remote = remote4(ip->daddr);
	__u8 src[16];

	if (!remote) {
		/* A reply to a node port's outside client, from the node's own
		 * address: the kernel would take it for a spoofed (martian)
		 * source, so the FIB sends it. */
		ct_map4(src, ip->saddr);
		if ((cfg->flags & AXON_CONFIG_LB) && node_addr(src))
			return to_native4(skb, ip);
		return next(AXON_STAT_TO_HOST);
	}
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

	if (!remote) {
		if ((cfg->flags & AXON_CONFIG_LB) && node_addr((const __u8 *)&ip6->saddr))
			return to_native6(skb, ip6);
		return next(AXON_STAT_TO_HOST);
	}
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
	struct pkt p = {}; /* read by the family of kind only, but clang may hoist */
	__u32 stat, fwd = AXON_STAT_FWD_LOCAL;
	int rc;

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
	} else if (!own_source(skb, endpoint6(&p.ip6->saddr))) {
		return drop(AXON_STAT_DROP_SPOOFED);
	}
	/*
	 * To a service: on to its backend; a reply: back from the frontend;
	 * to a frontend without backends: refused, the answer back to the pod.
	 */
	rc = lb_from_pod(skb, cfg, &p, kind, &stat);
	if (rc < 0)
		return drop(stat);
	if (rc > 0)
		fwd = stat;

	if (kind == PARSE_IPV4) {
		ep = endpoint4(p.ip4->daddr);
		if (ep)
			return deliver_local4(p.eth, p.ip4, ep, fwd);
		if (rc > 0)
			return drop(AXON_STAT_DROP_NO_BACKEND);
		return to_remote4(skb, cfg, p.eth, p.ip4);
	}
	ep = endpoint6(&p.ip6->daddr);
	if (ep)
		return deliver_local6(skb, p.eth, p.ip6, ep, fwd);
	if (rc > 0)
		return drop(AXON_STAT_DROP_NO_BACKEND);
	return to_remote6(skb, cfg, p.eth, p.ip6);
}

/*
 * axon_to_pod: a tc (direct-action) filter on the egress of every pod's
 * host-side veth, for the packets the node's kernel routes into the pod
 * (Cilium's "to-container"); the programs' own deliveries (redirect_peer)
 * skip it. A service's backend that is no pod (the node's API server behind
 * the kubernetes Service, a hostNetwork pod, any address outside the pod
 * CIDRs) answers through the kernel: its reply is translated back here, the
 * frontend as its source, as axon_from_pod, decapsulation and
 * axon_from_overlay do on the paths they deliver. Everything else passes.
 */
SEC("tc")
int axon_to_pod(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	enum parse kind;
	struct pkt p = {};

	kind = parse(skb, &p);
	switch (kind) {
	case PARSE_IPV4:
	case PARSE_IPV6:
		break;
	case PARSE_IPV6_LINK:
	case PARSE_OTHER:
		return next(AXON_STAT_NON_IPV4);
	default:
		return next(AXON_STAT_KERNEL_TO_POD); /* the kernel's own frame: not ours to judge */
	}
	cfg = config();
	if (cfg && ct_reverse(skb, cfg, &p, kind) < 0)
		return drop(AXON_STAT_DROP_NAT);
	return next(AXON_STAT_KERNEL_TO_POD);
}

AXON_BPF_LICENSE();
