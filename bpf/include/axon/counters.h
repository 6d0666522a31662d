/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Counters (axon_stats) and the verdicts that end a program after counting.
 * Every packet a program sees increments exactly one counter. Redirect
 * helpers act only after the program ends, so a redirecting path counts
 * before it calls the helper.
 */
#ifndef AXON_COUNTERS_H
#define AXON_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/maps.h"
#include "axon/tcx.h"

static __always_inline void count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&axon_stats, &stat);

	if (c)
		*c += 1; /* per-CPU: no atomics needed */
}

/* Counts stat and leaves the packet to the kernel. */
static __always_inline int next(__u32 stat)
{
	count(stat);
	return AXON_TCX_NEXT;
}

/* Counts stat and drops the packet. */
static __always_inline int drop(__u32 stat)
{
	count(stat);
	return AXON_TCX_DROP;
}

#endif /* AXON_COUNTERS_H */
