// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * The two programs of the overlay device (axon_vxlan, flow-based; or
 * axon_geneve), attached with tcx:
 *
 *   axon_from_overlay  ingress: frames the device decapsulated. Those for a
 *                      local pod from a pod address are delivered into the
 *                      pod; the rest are marked for the node.
 *   axon_to_overlay    egress: packets the node's own stack routes into the
 *                      overlay get the tunnel endpoint of their block.
 *
 * Pods' packets to other nodes mostly skip the device (axon_from_pod
 * encapsulates them itself) and so do packets for local pods from other
 * nodes (axon_from_underlay decapsulates them); the device carries what
 * those cannot handle.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/counters.h"
#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/license.h"
#include "axon/local.h"
#include "axon/maps.h"
#include "axon/parse.h"
#include "axon/tcx.h"
#include "axon/tunnel.h"

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
		if (ct_reverse(skb, cfg, &p, kind) < 0)
			return drop(AXON_STAT_DROP_NAT);
		return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_OVERLAY_LOCAL);
	}
	ep = endpoint6(&p.ip6->daddr);
	if (!ep || !pod_src6(&p.ip6->saddr))
		return overlay_to_host(skb);
	if (ct_reverse(skb, cfg, &p, kind) < 0)
		return drop(AXON_STAT_DROP_NAT);
	return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_OVERLAY_LOCAL);
}

/*
 * Packets the node's own stack routes into the overlay (the node, or
 * masqueraded traffic, towards a remote pod) get the tunnel endpoint of the
 * destination's block. Without one the flow-based device could not send
 * them, so they are dropped and counted. IPv6 for the link itself (ND,
 * link-local, multicast) returns NEXT as in the other programs; without a
 * tunnel key the device drops it too.
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

AXON_BPF_LICENSE();
