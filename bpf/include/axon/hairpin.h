/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Hairpin: a pod connecting to a service whose chosen backend is the pod
 * itself. Translated to its own address from its own address, the packet
 * would be dropped by the pod's kernel as a martian; so the flow's source
 * becomes a reserved address (AXON_HAIRPIN_*, axon/datapath.h) that the
 * pod answers through its router, where the reply entry turns its answer
 * back into one from the frontend to the pod. Nothing but the connection
 * tracker's two entries knows of it.
 */
#ifndef AXON_HAIRPIN_H
#define AXON_HAIRPIN_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

#include "axon/ct.h"
#include "axon/datapath.h"

/* Whether addr16 (axon_ct's form) is IPv4-mapped. */
static __always_inline int ct_is4(const __u8 *addr16)
{
	__u64 hi;
	__u32 mid;

	__builtin_memcpy(&hi, addr16, sizeof(hi));
	__builtin_memcpy(&mid, addr16 + 8, sizeof(mid));
	return !hi && mid == bpf_htonl(0xffff);
}

/*
 * The source a new connection from client to backend leaves with, written
 * to src16: the client's own, or the hairpin address of its family when the
 * backend is the client.
 */
static __always_inline void hairpin_source(__u8 *src16, const __u8 *client16, const __u8 *backend16)
{
	__u64 c[2], b[2];

	__builtin_memcpy(c, client16, sizeof(c));
	__builtin_memcpy(b, backend16, sizeof(b));
	if (c[0] != b[0] || c[1] != b[1]) {
		__builtin_memcpy(src16, client16, 16);
		return;
	}
	if (ct_is4(client16)) {
		ct_map4(src16, bpf_htonl(AXON_HAIRPIN_IP4));
		return;
	}
	b[0] = bpf_cpu_to_be64(AXON_HAIRPIN_IP6_HI);
	b[1] = bpf_cpu_to_be64(AXON_HAIRPIN_IP6_LO);
	__builtin_memcpy(src16, b, 16);
}

#endif /* AXON_HAIRPIN_H */
