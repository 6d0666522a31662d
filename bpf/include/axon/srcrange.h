/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Source ranges (loadBalancerSourceRanges): a frontend entry flagged
 * AXON_LB_F_SOURCE_RANGES takes new connections only from clients inside
 * one of its prefixes (axon_lb_source_ranges). Established flows are not
 * judged again: their entry in the connection tracker is their admission.
 */
#ifndef AXON_SRCRANGE_H
#define AXON_SRCRANGE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/datapath.h"
#include "axon/maps.h"

/* Whether a client at client16 may open a connection to svc. */
static __always_inline int source_allowed(const struct axon_lb_service *svc, const __u8 *client16)
{
	struct axon_lb_source_key key;

	if (!(svc->flags & AXON_LB_F_SOURCE_RANGES))
		return 1;
	key.prefixlen = 32 + 128;
	key.service_id = bpf_htonl(svc->id);
	__builtin_memcpy(key.addr, client16, sizeof(key.addr));
	return bpf_map_lookup_elem(&axon_lb_source_ranges, &key) != NULL;
}

#endif /* AXON_SRCRANGE_H */
