/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Service load balancing for pods (ClusterIP): a pod's TCP or UDP packet to
 * a frontend (axon_lb_services) goes to one of its backends
 * (axon_lb_slots), chosen for a new connection (at random, by the client's
 * session affinity, or by the frontend's Maglev table) and kept for the
 * connection's life by the connection tracker (axon/ct.h), which also
 * holds the reverse translation of the replies. A new connection from
 * outside a frontend's source ranges is dropped; one to a frontend without
 * backends is refused (axon/reject.h).
 */
#ifndef AXON_LB_H
#define AXON_LB_H

#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/affinity.h"
#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/hairpin.h"
#include "axon/maglev.h"
#include "axon/maps.h"
#include "axon/parse.h"
#include "axon/reject.h"
#include "axon/srcrange.h"

static __always_inline const struct axon_lb_service *lb_lookup(const struct axon_ct_key *k, __u8 scope)
{
	struct axon_lb_key key;

	__builtin_memcpy(key.addr, k->daddr, sizeof(key.addr));
	key.port = k->dport;
	key.proto = k->proto;
	key.scope = scope;
	return bpf_map_lookup_elem(&axon_lb_services, &key);
}

/* The gates of port (AXON_LB_PORT_*, from axon_lb_ports). */
static __always_inline __u32 lb_port(__be16 port)
{
	__u32 key = bpf_ntohs(port);
	const __u32 *v = bpf_map_lookup_elem(&axon_lb_ports, &key);

	return v ? *v : 0;
}

/*
 * The frontend entry for a client sending k, whose destination port has
 * the gates gates: the internal entry if the frontend has one and gates
 * allow it, else the external one, which every frontend has. A client
 * outside the cluster is given gates without AXON_LB_PORT_INTERNAL: it
 * uses the external entry (externalTrafficPolicy). NULL: k is not to a
 * frontend.
 */
static __always_inline const struct axon_lb_service *lb_service(const struct axon_ct_key *k, __u32 gates)
{
	const struct axon_lb_service *ext, *in;

	if (!(gates & AXON_LB_PORT_FRONTEND))
		return NULL;
	ext = lb_lookup(k, AXON_LB_SCOPE_EXTERNAL);
	if (!ext || !(gates & AXON_LB_PORT_INTERNAL))
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
								 __u32 gates)
{
	const struct axon_lb_service *s;

	if (!(gates & AXON_LB_PORT_FRONTEND))
		return NULL;
	__builtin_memcpy(fk, k, sizeof(*fk));
	s = lb_service(fk, gates);
	if (s || !node_addr(k->daddr))
		return s;
	if (ipv6_v4mapped((const struct in6_addr *)fk->daddr)) /* IPv4 */
		__builtin_memset(fk->daddr + 12, 0, 4);
	else
		__builtin_memset(fk->daddr, 0, sizeof(fk->daddr));
	return lb_service(fk, gates);
}

/* Attempts of lb_pick: each fails only if the agent wrote meanwhile. */
#define AXON_LB_PICK_TRIES 3

/*
 * Picks the backend of a new connection: a random slot of the active
 * backends, or of the terminating ones when none is active; a client with
 * session affinity keeps its backend (axon/affinity.h); an external
 * frontend's active backends are picked by its Maglev table (axon/maglev.h)
 * instead of at random. Map values are
 * read while the agent may write: the entry is copied at once (the agent
 * replaces it whole, never in place), and the pick stands only if the
 * frontend still has that entry once the slot is copied too. Otherwise
 * (the agent switched the frontend to new slots, removed the old ones, or
 * reused a replaced element for its next write) it is made again on the
 * entry as it now is. Returns 0, or -1 when the frontend has no backend.
 */
static __always_inline int lb_pick(const struct axon_ct_key *k, __u32 gates, struct axon_lb_service *svc,
				   struct axon_lb_backend *be)
{
	const struct axon_lb_backend *b;
	const struct axon_lb_service *s;
	struct axon_lb_slot_key sk;
	__u16 n;
	int rc;

	/* The client's backend, if it has affinity (else, or if the entry
	 * changed meanwhile, a new pick). */
	s = lb_service(k, gates);
	if (!s)
		return -1;
	__builtin_memcpy(svc, s, sizeof(*svc));
	n = svc->active ? svc->active : svc->terminating;
	if (n && affinity_pick(k->saddr, svc, n, be, &sk.slot) == 0) {
		s = lb_service(k, gates);
		if (s && s->id == svc->id && s->gen == svc->gen) {
			affinity_note(k->saddr, svc, be, sk.slot);
			return 0;
		}
	}
	for (int i = 0; i < AXON_LB_PICK_TRIES; i++) {
		s = lb_service(k, gates);
		if (!s)
			return -1;
		__builtin_memcpy(svc, s, sizeof(*svc));
		n = svc->active ? svc->active : svc->terminating;
		if (!n)
			return -1;
		sk.service_id = svc->id;
		rc = maglev_slot(k, svc);
		sk.slot = rc < 0 ? bpf_get_prandom_u32() % n : rc;
		sk.gen = svc->gen;
		sk.pad = 0;
		b = bpf_map_lookup_elem(&axon_lb_slots, &sk);
		if (!b)
			continue;
		__builtin_memcpy(be, b, sizeof(*be));
		s = lb_service(k, gates);
		if (s && s->id == svc->id && s->gen == svc->gen) {
			affinity_note(k->saddr, svc, be, sk.slot);
			return 0;
		}
	}
	return -1;
}

/*
 * Records a new connection k to backend be of svc: the FORWARD entry
 * (client -> frontend becomes client -> backend) and the REPLY entry
 * (backend -> client becomes frontend -> client). A backend that is the
 * client itself sees the connection from the hairpin address instead
 * (axon/hairpin.h), and answers it. Another CPU may have
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
	hairpin_source(e.to_saddr, k->saddr, be->addr);
	__builtin_memcpy(e.to_daddr, be->addr, sizeof(e.to_daddr));
	e.to_sport = k->sport;
	e.to_dport = be->port;
	e.service_id = svc->id;
	e.last_seen = bpf_ktime_get_coarse_ns();
	/* Before any entry: a reply may follow the forward entry at once. */
	ct_mark_reply_port(be->port);
	rc = bpf_map_update_elem(&axon_ct, k, &e, BPF_NOEXIST);
	if (rc == -EEXIST)
		return 0;
	if (rc < 0)
		return -1;

	__builtin_memset(&rk, 0, sizeof(rk));
	__builtin_memcpy(rk.saddr, be->addr, sizeof(rk.saddr));
	__builtin_memcpy(rk.daddr, e.to_saddr, sizeof(rk.daddr));
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

/* Results of axon_lb_new_flow. */
enum axon_lb_new {
	AXON_LB_NEW_OK = 0,
	AXON_LB_NEW_NO_BACKEND = 1,
	AXON_LB_NEW_CT_FULL = 2,
	AXON_LB_NEW_NO_NAT_PORT = 3, /* axon_np_new_flow */
	AXON_LB_NEW_SOURCE_DENIED = 4,
};

/*
 * Picks the backend of a new connection k, looked up by fk with gates, for
 * a client its frontend's source ranges admit. The ranges are judged on
 * the copy of the entry the pick was made from (the entry itself may be
 * recycled by the agent's next write meanwhile). Returns an enum
 * axon_lb_new: OK, NO_BACKEND or SOURCE_DENIED.
 */
static __always_inline int lb_admit_pick(const struct axon_ct_key *k, const struct axon_ct_key *fk, __u32 gates,
					 struct axon_lb_service *svc, struct axon_lb_backend *be)
{
	const struct axon_lb_service *s;

	if (lb_pick(fk, gates, svc, be) == 0)
		return source_allowed(svc, k->saddr) ? AXON_LB_NEW_OK : AXON_LB_NEW_SOURCE_DENIED;
	/* No backend: a client the ranges refuse learns nothing from a refusal. */
	s = lb_service(fk, gates);
	if (s) {
		__builtin_memcpy(svc, s, sizeof(*svc));
		if (!source_allowed(svc, k->saddr))
			return AXON_LB_NEW_SOURCE_DENIED;
	}
	return AXON_LB_NEW_NO_BACKEND;
}

/*
 * Picks and records the backend of a new connection k to a frontend,
 * looked up by fk (lb_frontend) with gates (lb_port, and the client's
 * scope). Global (not inlined, not static): the verifier checks it once,
 * on its own, instead of walking the rest of the program once per way a
 * pick can end (affinity, random slot, ...). Returns an enum axon_lb_new.
 */
__noinline int axon_lb_new_flow(const struct axon_ct_key *k, const struct axon_ct_key *fk, __u32 gates)
{
	struct axon_lb_service svc;
	struct axon_lb_backend be;
	int rc;

	if (!k || !fk)
		return AXON_LB_NEW_NO_BACKEND;
	rc = lb_admit_pick(k, fk, gates, &svc, &be);
	if (rc != AXON_LB_NEW_OK)
		return rc;
	if (lb_record(k, &svc, &be) < 0)
		return AXON_LB_NEW_CT_FULL;
	return AXON_LB_NEW_OK;
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
	struct axon_ct_key k, fk;
	struct axon_l4 l;
	__u32 gates;
	int rc;

	*stat = AXON_STAT_DROP_NAT;
	if (!(cfg->flags & AXON_CONFIG_LB) || ct_tuple(skb, p, kind, &k, &l) < 0)
		return 0;
	gates = lb_port(k.dport);
	frontend = lb_frontend(&k, &fk, gates);
	if (!frontend) {
		if (!ct_reply_port(k.sport))
			return 0;
		k.dir = AXON_CT_REPLY;
	}
	rc = ct_apply(skb, p, kind, &k, &l);
	if (rc || !frontend)
		return rc < 0 ? -1 : 0;
	/* A new connection: admit it, record it, translate it as recorded. */
	switch (axon_lb_new_flow(&k, &fk, gates)) {
	case AXON_LB_NEW_OK:
		break;
	case AXON_LB_NEW_CT_FULL:
		*stat = AXON_STAT_DROP_CT_FULL;
		return -1;
	case AXON_LB_NEW_SOURCE_DENIED:
		*stat = AXON_STAT_DROP_SOURCE_RANGE;
		return -1;
	default:
		*stat = AXON_STAT_DROP_NO_BACKEND;
		if (axon_reject(skb, &k, &l) < 0 || reparse(skb, p, kind) != kind)
			return -1;
		*stat = AXON_STAT_REJECTED;
		return 1;
	}
	return ct_apply(skb, p, kind, &k, &l) > 0 ? 0 : -1;
}

#endif /* AXON_LB_H */
