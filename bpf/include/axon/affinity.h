/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Session affinity (ClientIP): a frontend entry with an affinity timeout
 * sends every new connection of a client address to the backend its
 * previous one went to, as long as they come sooner than the timeout apart
 * and that backend is still one of the entry's (axon_lb_affinity).
 */
#ifndef AXON_AFFINITY_H
#define AXON_AFFINITY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/datapath.h"
#include "axon/maps.h"

#define AXON_NS_PER_SEC 1000000000ULL

static __always_inline void affinity_key(struct axon_lb_affinity_key *ak, __u32 id, const __u8 *client16)
{
	ak->service_id = id;
	ak->pad = 0;
	__builtin_memcpy(ak->client, client16, sizeof(ak->client));
}

static __always_inline int same_backend(const struct axon_lb_backend *a, const struct axon_lb_backend *b)
{
	__u64 x[2], y[2];

	__builtin_memcpy(x, a->addr, sizeof(x));
	__builtin_memcpy(y, b->addr, sizeof(y));
	return x[0] == y[0] && x[1] == y[1] && a->port == b->port;
}

/* Whether slot of svc's entry holds want; if so, copied to be. */
static __always_inline int affinity_at(const struct axon_lb_service *svc, __u16 slot,
				       const struct axon_lb_backend *want, struct axon_lb_backend *be)
{
	struct axon_lb_slot_key sk = { .service_id = svc->id, .slot = slot, .gen = svc->gen };
	const struct axon_lb_backend *b = bpf_map_lookup_elem(&axon_lb_slots, &sk);

	if (!b || !same_backend(b, want))
		return 0;
	__builtin_memcpy(be, b, sizeof(*be));
	return 1;
}

/*
 * The client's remembered backend among svc's first n slots: 0 with it in
 * be and its slot in *slot, or -1 (no affinity, none remembered, expired,
 * or no longer a backend of the entry). Its slot is looked at first; if
 * the entry was switched meanwhile, the first AXON_LB_AFFINITY_SCAN.
 */
static __always_inline int affinity_pick(const __u8 *client16, const struct axon_lb_service *svc, __u16 n,
					 struct axon_lb_backend *be, __u16 *slot)
{
	const struct axon_lb_affinity *a;
	struct axon_lb_affinity_key ak;
	struct axon_lb_backend want;
	__u64 now, last;
	__u16 hint;

	if (!svc->affinity_timeout)
		return -1;
	affinity_key(&ak, svc->id, client16);
	a = bpf_map_lookup_elem(&axon_lb_affinity, &ak);
	if (!a)
		return -1;
	/* Another CPU may have just written a later time. */
	now = bpf_ktime_get_ns();
	last = a->last_used;
	if (now > last && now - last > (__u64)svc->affinity_timeout * AXON_NS_PER_SEC)
		return -1;
	__builtin_memcpy(&want, &a->backend, sizeof(want));
	hint = a->slot;
	if (hint < n && affinity_at(svc, hint, &want, be)) {
		*slot = hint;
		return 0;
	}
	for (__u16 i = 0; i < AXON_LB_AFFINITY_SCAN && i < n; i++) {
		if (affinity_at(svc, i, &want, be)) {
			*slot = i;
			return 0;
		}
	}
	return -1;
}

/* Remembers be (at slot) as the client's backend of svc, used now. */
static __always_inline void affinity_note(const __u8 *client16, const struct axon_lb_service *svc,
					  const struct axon_lb_backend *be, __u16 slot)
{
	struct axon_lb_affinity_key ak;
	struct axon_lb_affinity a;

	if (!svc->affinity_timeout)
		return;
	affinity_key(&ak, svc->id, client16);
	__builtin_memcpy(&a.backend, be, sizeof(a.backend));
	a.slot = slot;
	a.pad = 0;
	a.last_used = bpf_ktime_get_ns();
	/* A failure only loses stickiness: the connection goes on. */
	bpf_map_update_elem(&axon_lb_affinity, &ak, &a, BPF_ANY);
}

#endif /* AXON_AFFINITY_H */
