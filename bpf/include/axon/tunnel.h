/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The overlay's wire format (VXLAN, RFC 7348) and the tunnel key that sends
 * a packet through the flow-based tunnel device (axon_vxlan) instead.
 */
#ifndef AXON_TUNNEL_H
#define AXON_TUNNEL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/datapath.h"

/* The VXLAN header: flags (I = VNI valid), VNI in the top 24 bits. */
struct axon_vxlanhdr {
	__be32 flags;
	__be32 vni;
};

#define AXON_VXLAN_FLAG_VNI bpf_htonl(0x08000000)

/*
 * Sets the tunnel key with which the tunnel device encapsulates towards the
 * node that owns the destination block, over the IPv4 underlay whatever the
 * inner family. The inner frame keeps its MACs and TTL: the receiving node
 * rewrites both when it delivers (one routed hop per node pair, as with
 * kernel VXLAN routing). Returns the helper's result (negative on error).
 */
static __always_inline long set_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				       const struct axon_remote *remote)
{
	struct bpf_tunnel_key key;

	/* Whole struct zeroed: the helper reads it all, padding included. */
	__builtin_memset(&key, 0, sizeof(key));
	key.tunnel_id = AXON_TUNNEL_VNI;
	/* The helper takes host byte order (it applies cpu_to_be32). */
	key.remote_ipv4 = bpf_ntohl(remote->node_ip4);
	key.local_ipv4 = bpf_ntohl(cfg->node_ip4); /* 0: the kernel picks */
	key.tunnel_ttl = AXON_TUNNEL_TTL;
	/*
	 * No BPF_F_TUNINFO_IPV6: the outer header is IPv4, where a zero UDP
	 * checksum is valid and what a VXLAN device sends by default. Without
	 * BPF_F_ZERO_CSUM_TX the helper asks for an outer checksum, which the
	 * kernel computes in software for every segment of a GSO packet.
	 */
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

#endif /* AXON_TUNNEL_H */
