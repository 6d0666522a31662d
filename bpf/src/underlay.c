// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * axon_from_underlay: tcx ingress of the node's underlay device (the one
 * holding the node address). Packets from other nodes for local pods go
 * straight to the pods, skipping the node's stack: in tunnel mode
 * decapsulated here rather than by the UDP socket and axon_vxlan, in native
 * mode instead of being forwarded by the kernel. Connections to service
 * frontends from outside the cluster (node ports, LoadBalancer and external
 * IPs) are translated here and sent to their backends, and the replies
 * back to the client (axon/nodeport.h). Frames for other hosts' MACs, and
 * everything else, go on to the kernel.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/counters.h"
#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/decap.h"
#include "axon/license.h"
#include "axon/local.h"
#include "axon/maps.h"
#include "axon/nodeport.h"
#include "axon/parse.h"

SEC("tc")
int axon_from_underlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg = config();
	const struct axon_endpoint *ep;
	enum parse kind;
	struct pkt p;
	int rc;

	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);
	if (skb->pkt_type != 0 /* PACKET_HOST */)
		return next(AXON_STAT_UNDERLAY_TO_HOST);
	/* Axon's VXLAN first: node port lookups cost it nothing. */
	if (cfg->mode == AXON_MODE_TUNNEL && !(cfg->flags & AXON_CONFIG_GENEVE) && vxlan_frame(skb, cfg))
		return decap_vxlan(skb, cfg);
	/* Service frontends reached from outside, and their replies. */
	rc = np_from_underlay(skb, cfg);
	if (rc != AXON_NP_NONE)
		return rc;
	/* Geneve is decapsulated by its device only. */
	if (cfg->mode == AXON_MODE_TUNNEL)
		return next(AXON_STAT_UNDERLAY_TO_HOST);

	/*
	 * Native mode: only packets from other nodes' pods (a remote block)
	 * skip the node's stack. Which node sent one cannot be told here (a
	 * routed underlay hides it); a local pod's address arriving from the
	 * underlay is spoofed and goes to the kernel like any other stranger.
	 */
	kind = parse(skb, &p);
	if (kind == PARSE_IPV4) {
		ep = endpoint4(p.ip4->daddr);
		if (ep && remote4(p.ip4->saddr)) {
			if (ct_reverse(skb, cfg, &p, kind) < 0)
				return drop(AXON_STAT_DROP_NAT);
			return deliver_local4(p.eth, p.ip4, ep, AXON_STAT_OVERLAY_LOCAL);
		}
	} else if (kind == PARSE_IPV6) {
		ep = endpoint6(&p.ip6->daddr);
		if (ep && remote6(&p.ip6->saddr)) {
			if (ct_reverse(skb, cfg, &p, kind) < 0)
				return drop(AXON_STAT_DROP_NAT);
			return deliver_local6(skb, p.eth, p.ip6, ep, AXON_STAT_OVERLAY_LOCAL);
		}
	}
	/* Malformed frames too: the kernel judges the node's own traffic. */
	return next(AXON_STAT_UNDERLAY_TO_HOST);
}

AXON_BPF_LICENSE();
