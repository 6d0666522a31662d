/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Maglev consistent hashing for external frontends: a new connection's
 * backend is the entry of the frontend's Maglev table (axon_lb_maglev,
 * built by the agent) at a hash of the connection's tuple. The hash has a
 * fixed seed and the table is the same on every node, so a flow that an
 * upstream router moves to another node reaches the same backend there;
 * and a backend change moves few flows.
 */
#ifndef AXON_MAGLEV_H
#define AXON_MAGLEV_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "axon/datapath.h"
#include "axon/maps.h"

static __always_inline __u32 rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/* Bob Jenkins' lookup3 mix and final (public domain), as the kernel's jhash. */
#define AXON_JHASH_MIX(a, b, c)               \
	do {                                  \
		a -= c; a ^= rol32(c, 4); c += b;  \
		b -= a; b ^= rol32(a, 6); a += c;  \
		c -= b; c ^= rol32(b, 8); b += a;  \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4); b += a;  \
	} while (0)

#define AXON_JHASH_FINAL(a, b, c)        \
	do {                             \
		c ^= b; c -= rol32(b, 14); \
		a ^= c; a -= rol32(c, 11); \
		b ^= a; b -= rol32(a, 25); \
		c ^= b; c -= rol32(b, 16); \
		a ^= c; a -= rol32(c, 4);  \
		b ^= a; b -= rol32(a, 14); \
		c ^= b; c -= rol32(b, 24); \
	} while (0)

#define AXON_JHASH_INITVAL 0xdeadbeef

/*
 * The hash of a connection's tuple (addresses, ports, protocol: 10 words,
 * as a little-endian node loads them) with the fixed seed: jhash2 of the
 * words, the same on every node.
 */
static __always_inline __u32 maglev_hash(const struct axon_ct_key *k)
{
	__u32 w[10];
	__u32 a, b, c;

	__builtin_memcpy(w, k->saddr, 16);
	__builtin_memcpy(w + 4, k->daddr, 16);
	w[8] = (__u32)k->sport << 16 | k->dport;
	w[9] = k->proto;
	a = b = c = AXON_JHASH_INITVAL + (10 << 2) + AXON_MAGLEV_SEED;
	a += w[0]; b += w[1]; c += w[2];
	AXON_JHASH_MIX(a, b, c);
	a += w[3]; b += w[4]; c += w[5];
	AXON_JHASH_MIX(a, b, c);
	a += w[6]; b += w[7]; c += w[8];
	AXON_JHASH_MIX(a, b, c);
	a += w[9];
	AXON_JHASH_FINAL(a, b, c);
	return c;
}

/*
 * The slot of svc's active backends that its Maglev table gives the
 * connection k, or -1 (no table: the caller picks at random).
 */
static __always_inline int maglev_slot(const struct axon_ct_key *k, const struct axon_lb_service *svc)
{
	struct axon_lb_maglev_key mk = { .service_id = svc->id, .gen = svc->gen };
	const struct axon_lb_maglev *t;
	__u32 idx;
	__u16 slot;

	/*
	 * No source port: a socket program's pick, before the socket has one
	 * (sock.c zeroes the source). Hashing the frontend alone would send
	 * every such connection to one backend: they pick at random.
	 */
	if (!(svc->flags & AXON_LB_F_MAGLEV) || !svc->active || !k->sport)
		return -1;
	t = bpf_map_lookup_elem(&axon_lb_maglev, &mk);
	if (!t)
		return -1;
	idx = maglev_hash(k) % AXON_MAGLEV_SIZE;
	/* The verifier does not bound a modulo: the check it sees, kept
	 * (clang would drop it as always true). */
	asm volatile("" : "+r"(idx));
	if (idx >= AXON_MAGLEV_SIZE)
		return -1;
	slot = t->slot[idx];
	return slot < svc->active ? slot : -1;
}

#endif /* AXON_MAGLEV_H */
