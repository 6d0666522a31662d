/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Service load balancing for pods (ClusterIP): a pod's TCP or UDP packet to
 * a frontend (axon_lb_services) goes to one of its backends
 * (axon_lb_slots), chosen at random for a new connection and kept for the
 * connection's life by the connection tracker (axon/ct.h), which also
 * holds the reverse translation of the replies.
 */
#ifndef AXON_LB_H
#define AXON_LB_H

#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/maps.h"
#include "axon/parse.h"

static __always_inline const struct axon_lb_service *lb_lookup(const struct axon_ct_key *k, __u8 scope)
{
	struct axon_lb_key key;

	__builtin_memcpy(key.addr, k->daddr, sizeof(key.addr));
	key.port = k->dport;
	key.proto = k->proto;
	key.scope = scope;
	return bpf_map_lookup_elem(&axon_lb_services, &key);
}

/*
 * The frontend entry for a client sending k: for an in-cluster client (a
 * pod, a node) the internal entry if the frontend has one, else the
 * external one, which every frontend has. NULL: k is not to a frontend.
 */
static __always_inline const struct axon_lb_service *lb_service(const struct axon_ct_key *k, int in_cluster)
{
	const struct axon_lb_service *ext = lb_lookup(k, AXON_LB_SCOPE_EXTERNAL), *in;

	if (!ext || !in_cluster)
		return ext;
	in = lb_lookup(k, AXON_LB_SCOPE_INTERNAL);
	return in ? in : ext;
}

/*
 * The frontend k is sent to, with fk the key to look it up by: k itself,
 * or k to the wildcard address of its family (0.0.0.0, ::; a node port on
 * every node address) when k's destination is one of this node's
 * addresses without a frontend of its own. NULL: k is not to a frontend.
 */
static __always_inline const struct axon_lb_service *lb_frontend(const struct axon_ct_key *k, struct axon_ct_key *fk,
								 int in_cluster)
{
	const struct axon_lb_service *s;

	__builtin_memcpy(fk, k, sizeof(*fk));
	s = lb_service(fk, in_cluster);
	if (s || !node_addr(k->daddr))
		return s;
	if (ipv6_v4mapped((const struct in6_addr *)fk->daddr)) /* IPv4 */
		__builtin_memset(fk->daddr + 12, 0, 4);
	else
		__builtin_memset(fk->daddr, 0, sizeof(fk->daddr));
	return lb_service(fk, in_cluster);
}

/* Attempts of lb_pick: each fails only if the agent wrote meanwhile. */
#define AXON_LB_PICK_TRIES 3

/*
 * Picks the backend of a new connection: a random slot of the active
 * backends, or of the terminating ones when none is active. Map values are
 * read while the agent may write: the entry is copied at once (the agent
 * replaces it whole, never in place), and the pick stands only if the
 * frontend still has that entry once the slot is copied too. Otherwise
 * (the agent switched the frontend to new slots, removed the old ones, or
 * reused a replaced element for its next write) it is made again on the
 * entry as it now is. Returns 0, or -1 when the frontend has no backend.
 */
static __always_inline int lb_pick(const struct axon_ct_key *k, int in_cluster, struct axon_lb_service *svc,
				   struct axon_lb_backend *be)
{
	const struct axon_lb_backend *b;
	const struct axon_lb_service *s;
	struct axon_lb_slot_key sk;
	__u16 n;

	for (int i = 0; i < AXON_LB_PICK_TRIES; i++) {
		s = lb_service(k, in_cluster);
		if (!s)
			return -1;
		__builtin_memcpy(svc, s, sizeof(*svc));
		n = svc->active ? svc->active : svc->terminating;
		if (!n)
			return -1;
		sk.service_id = svc->id;
		sk.slot = bpf_get_prandom_u32() % n;
		sk.gen = svc->gen;
		sk.pad = 0;
		b = bpf_map_lookup_elem(&axon_lb_slots, &sk);
		if (!b)
			continue;
		__builtin_memcpy(be, b, sizeof(*be));
		s = lb_service(k, in_cluster);
		if (s && s->id == svc->id && s->gen == svc->gen)
			return 0;
	}
	return -1;
}

/*
 * Records a new connection k to backend be of svc: the FORWARD entry
 * (client -> frontend becomes client -> backend) and the REPLY entry
 * (backend -> client becomes frontend -> client). Another CPU may have
 * recorded the same connection first: then its entries stand. Returns 0, or
 * -1 if axon_ct is full.
 */
static __always_inline int lb_record(const struct axon_ct_key *k, const struct axon_lb_service *svc,
				     const struct axon_lb_backend *be)
{
	struct axon_ct_entry e;
	struct axon_ct_key rk;
	long rc;

	__builtin_memset(&e, 0, sizeof(e));
	__builtin_memcpy(e.to_saddr, k->saddr, sizeof(e.to_saddr));
	__builtin_memcpy(e.to_daddr, be->addr, sizeof(e.to_daddr));
	e.to_sport = k->sport;
	e.to_dport = be->port;
	e.service_id = svc->id;
	e.last_seen = bpf_ktime_get_ns();
	rc = bpf_map_update_elem(&axon_ct, k, &e, BPF_NOEXIST);
	if (rc == -EEXIST)
		return 0;
	if (rc < 0)
		return -1;

	__builtin_memset(&rk, 0, sizeof(rk));
	__builtin_memcpy(rk.saddr, be->addr, sizeof(rk.saddr));
	__builtin_memcpy(rk.daddr, k->saddr, sizeof(rk.daddr));
	rk.sport = be->port;
	rk.dport = k->sport;
	rk.proto = k->proto;
	rk.dir = AXON_CT_REPLY;
	__builtin_memcpy(e.to_saddr, k->daddr, sizeof(e.to_saddr));
	__builtin_memcpy(e.to_daddr, k->saddr, sizeof(e.to_daddr));
	e.to_sport = k->dport;
	e.to_dport = k->sport;
	if (bpf_map_update_elem(&axon_ct, &rk, &e, BPF_ANY) < 0) {
		bpf_map_delete_elem(&axon_ct, k);
		return -1;
	}
	return 0;
}

/*
 * Service translation of a pod's packet, before it is forwarded: to a
 * frontend, it goes to the connection's backend (a new connection gets
 * one); otherwise a reply of a translated flow comes back from the
 * frontend. Returns 0 with p pointing at the headers to forward by
 * (translated or not), or -1 with *stat the counter of the drop.
 */
static __always_inline int lb_from_pod(struct __sk_buff *skb, const struct axon_config *cfg, struct pkt *p,
				       enum parse kind, __u32 *stat)
{
	const struct axon_lb_service *frontend;
	struct axon_lb_service svc;
	struct axon_lb_backend be;
	struct axon_ct_key k, fk;
	struct axon_l4 l;
	int rc;

	*stat = AXON_STAT_DROP_NAT;
	if (!(cfg->flags & AXON_CONFIG_LB) || ct_tuple(skb, p, kind, &k, &l) < 0)
		return 0;
	frontend = lb_frontend(&k, &fk, 1);
	if (!frontend)
		k.dir = AXON_CT_REPLY;
	rc = ct_apply(skb, p, kind, &k, &l);
	if (rc || !frontend)
		return rc < 0 ? -1 : 0;
	/* A new connection: record it, then translate it as recorded. */
	if (lb_pick(&fk, 1, &svc, &be) < 0) {
		*stat = AXON_STAT_DROP_NO_BACKEND;
		return -1;
	}
	if (lb_record(&k, &svc, &be) < 0) {
		*stat = AXON_STAT_DROP_CT_FULL;
		return -1;
	}
	return ct_apply(skb, p, kind, &k, &l) > 0 ? 0 : -1;
}

#endif /* AXON_LB_H */
