// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * axon_probe: the toolchain proof for the bpf2go pipeline.
 *
 * A tcx program that counts the packets and bytes it sees and never changes
 * forwarding: it always returns AXON_TCX_NEXT, so later programs in the chain
 * (or the kernel's normal path) decide what happens to the packet.
 *
 * One program serves both hooks. The loader sets `direction` (0 ingress,
 * 1 egress) before loading; it lives in .rodata, so the verifier sees it as a
 * constant and the value cannot change after load.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/license.h"
#include "axon/tcx.h"

/* Keys of the counters map and values of `direction`. */
enum {
	DIRECTION_INGRESS = 0,
	DIRECTION_EGRESS = 1,
	DIRECTION_MAX,
};

struct counter {
	__u64 packets;
	__u64 bytes; /* skb->len: the frame from the L2 header on */
};

/* Per-CPU, so updates need no atomics; readers sum over CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTION_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

/* Set by the loader through the collection spec; see probe.Load. */
volatile const __u32 direction = DIRECTION_INGRESS;

SEC("tc")
int axon_probe(struct __sk_buff *skb)
{
	__u32 key = direction;
	struct counter *c;

	c = bpf_map_lookup_elem(&counters, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}

	return AXON_TCX_NEXT;
}

AXON_BPF_LICENSE();
