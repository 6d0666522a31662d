/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Frontends reached from outside the cluster (node ports, LoadBalancer
 * addresses, external IPs), on the underlay device's ingress. A new
 * connection gets a backend as a pod's would (axon/lb.h), from the external
 * entry of the frontend unless the client is in the cluster (a pod, this
 * node). A backend on this node sees the client's own address; one on
 * another node is reached with this node's address and a port of its own
 * (SNAT), so that its replies come back here to be translated back. The
 * translated packet is then delivered, tunnelled or routed like a pod's;
 * replies to the client leave by the FIB.
 *
 * SNAT ports are taken from AXON_NAT_PORT_MIN..AXON_NAT_PORT_MAX, above the
 * node ports (30000-32767) and the kernel's default ephemeral ports
 * (net.ipv4.ip_local_port_range 32768-60999), and the agent reserves them
 * (net.ipv4.ip_local_reserved_ports), so they never collide with the
 * node's own connections.
 */
#ifndef AXON_NODEPORT_H
#define AXON_NODEPORT_H

#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/counters.h"
#include "axon/csum.h"
#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/encap.h"
#include "axon/fib.h"
#include "axon/lb.h"
#include "axon/local.h"
#include "axon/maps.h"
#include "axon/parse.h"

#define AXON_NAT_PORT_MIN 61000
#define AXON_NAT_PORT_MAX 65535
/* Random SNAT ports tried before a new connection is refused. */
#define AXON_NAT_PORT_TRIES 16

/* Not a packet of a frontend: np_from_underlay leaves it to the caller. */
#define AXON_NP_NONE 1000

/* Whether k's source is in the cluster: a pod's address or this node's. */
static __always_inline int np_in_cluster(const struct axon_ct_key *k)
{
	if (ipv6_v4mapped((const struct in6_addr *)k->saddr)) {
		__u32 ip4;

		__builtin_memcpy(&ip4, k->saddr + 12, sizeof(ip4));
		if (pod_src4(ip4))
			return 1;
	} else if (pod_src6((const struct in6_addr *)k->saddr)) {
		return 1;
	}
	return node_addr(k->saddr);
}

/*
 * The address a connection k to a backend on another node leaves with:
 * the node address it was sent to, else the SNAT source of its family
 * (LoadBalancer and external IPs). Returns -1 if the node has none.
 */
static __always_inline int np_snat_addr(const struct axon_ct_key *k, __u8 *out)
{
	const struct axon_node_addr_value *v;
	struct axon_node_addr key;

	if (node_addr(k->daddr)) {
		__builtin_memcpy(out, k->daddr, 16);
		return 0;
	}
	__builtin_memset(&key, 0, sizeof(key));
	if (ipv6_v4mapped((const struct in6_addr *)k->daddr))
		ct_map4(key.addr, 0);
	v = bpf_map_lookup_elem(&axon_node_addrs, &key);
	if (!v || !(v->flags & AXON_NODE_ADDR_SNAT))
		return -1;
	__builtin_memcpy(out, v->snat, 16);
	return 0;
}

/*
 * Records a new connection k to be, a backend on another node, leaving
 * from saddr and a free SNAT port: the REPLY entry is written first, as
 * the claim on the port (backend -> saddr:port becomes frontend ->
 * client), then the FORWARD one (client -> frontend becomes saddr:port ->
 * backend). Another CPU may have recorded the same connection first: then
 * its entries stand. Returns 0, -1 if axon_ct is full, -2 if no port was
 * free.
 */
static __always_inline int np_record_snat(const struct axon_ct_key *k, const struct axon_lb_service *svc,
					  const struct axon_lb_backend *be, const __u8 *saddr)
{
	struct axon_ct_entry e;
	struct axon_ct_key rk;
	long rc = -EEXIST;

	__builtin_memset(&rk, 0, sizeof(rk));
	__builtin_memcpy(rk.saddr, be->addr, sizeof(rk.saddr));
	__builtin_memcpy(rk.daddr, saddr, sizeof(rk.daddr));
	rk.sport = be->port;
	rk.proto = k->proto;
	rk.dir = AXON_CT_REPLY;
	__builtin_memset(&e, 0, sizeof(e));
	__builtin_memcpy(e.to_saddr, k->daddr, sizeof(e.to_saddr));
	__builtin_memcpy(e.to_daddr, k->saddr, sizeof(e.to_daddr));
	e.to_sport = k->dport;
	e.to_dport = k->sport;
	e.service_id = svc->id;
	e.last_seen = bpf_ktime_get_coarse_ns();
	/* Before any entry: a reply may follow the forward entry at once. */
	ct_mark_reply_port(be->port);
	for (int i = 0; i < AXON_NAT_PORT_TRIES && rc == -EEXIST; i++) {
		rk.dport = bpf_htons(AXON_NAT_PORT_MIN +
				     bpf_get_prandom_u32() % (AXON_NAT_PORT_MAX - AXON_NAT_PORT_MIN + 1));
		rc = bpf_map_update_elem(&axon_ct, &rk, &e, BPF_NOEXIST);
	}
	if (rc == -EEXIST)
		return -2;
	if (rc < 0)
		return -1;

	__builtin_memcpy(e.to_saddr, saddr, sizeof(e.to_saddr));
	__builtin_memcpy(e.to_daddr, be->addr, sizeof(e.to_daddr));
	e.to_sport = rk.dport;
	e.to_dport = be->port;
	rc = bpf_map_update_elem(&axon_ct, k, &e, BPF_NOEXIST);
	if (rc < 0)
		bpf_map_delete_elem(&axon_ct, &rk);
	return rc == 0 || rc == -EEXIST ? 0 : -1;
}

/*
 * Picks and records the backend of a new connection k from the underlay to
 * a frontend looked up by fk with gates: a backend on this node sees the
 * client's own address, one on another node this node's (SNAT). Global,
 * as axon_lb_new_flow. Returns an enum axon_lb_new.
 */
__noinline int axon_np_new_flow(const struct axon_ct_key *k, const struct axon_ct_key *fk, __u32 gates)
{
	struct axon_lb_service svc;
	struct axon_lb_backend be;
	__u8 saddr[16];
	int rc;

	if (!k || !fk)
		return AXON_LB_NEW_NO_BACKEND;
	rc = lb_admit_pick(k, fk, gates, &svc, &be);
	if (rc != AXON_LB_NEW_OK)
		return rc;
	if (be.flags & AXON_LB_BACKEND_LOCAL)
		return lb_record(k, &svc, &be) < 0 ? AXON_LB_NEW_CT_FULL : AXON_LB_NEW_OK;
	if (np_snat_addr(k, saddr) < 0)
		return AXON_LB_NEW_NO_BACKEND;
	rc = np_record_snat(k, &svc, &be, saddr);
	if (rc == -2)
		return AXON_LB_NEW_NO_NAT_PORT;
	return rc < 0 ? AXON_LB_NEW_CT_FULL : AXON_LB_NEW_OK;
}

/*
 * Sends a translated packet on: into a pod of this node, to another node's
 * pod (tunnel or native routing), or anywhere else by the FIB (a reply to
 * an outside client, which the kernel would refuse: its source is one of
 * the node's own addresses).
 */
static __always_inline int np_forward(struct __sk_buff *skb, const struct axon_config *cfg, struct pkt *p,
				      enum parse kind)
{
	const struct axon_endpoint *ep;
	const struct axon_remote *r;

	if (kind == PARSE_IPV4) {
		ep = endpoint4(p->ip4->daddr);
		if (ep)
			return deliver_local4(p->eth, p->ip4, ep, AXON_STAT_FWD_LOCAL);
		r = remote4(p->ip4->daddr);
		if (r && cfg->mode == AXON_MODE_TUNNEL)
			return to_tunnel(skb, cfg, r, p->eth, p->ip4->tos & AXON_ECN_MASK);
		return to_native4(skb, p->ip4);
	}
	ep = endpoint6(&p->ip6->daddr);
	if (ep)
		return deliver_local6(skb, p->eth, p->ip6, ep, AXON_STAT_FWD_LOCAL);
	r = remote6(&p->ip6->daddr);
	if (r && cfg->mode == AXON_MODE_TUNNEL)
		return to_tunnel(skb, cfg, r, p->eth, ipv6_ecn(p->ip6));
	return to_native6(skb, p->ip6);
}

/*
 * Translates a packet from the underlay to a frontend, or a reply of a
 * connection this node translated (to a SNAT port of its own, or to a
 * pod's address). Returns 1 if it did (p then points at the rewritten
 * headers), 0 for every other packet (nothing changed), or -1 with *stat
 * the counter of the drop.
 */
static __always_inline int np_translate(struct __sk_buff *skb, struct pkt *p, enum parse kind, __u32 *stat)
{
	struct axon_ct_key k, fk;
	struct axon_l4 l;
	__u32 gates;
	int rc;

	*stat = AXON_STAT_DROP_NAT;
	if (ct_tuple(skb, p, kind, &k, &l) < 0)
		return 0;
	/* Replies of connections sent to another node's backend. */
	if (bpf_ntohs(k.dport) >= AXON_NAT_PORT_MIN) {
		k.dir = AXON_CT_REPLY;
		if (bpf_map_lookup_elem(&axon_ct, &k))
			goto apply;
		k.dir = AXON_CT_FORWARD;
	}
	/* Every frontend has an external entry: the scope matters only then. */
	gates = lb_port(k.dport);
	if (!lb_frontend(&k, &fk, gates & ~AXON_LB_PORT_INTERNAL))
		return 0;
	if (bpf_map_lookup_elem(&axon_ct, &k))
		goto apply;
	/* A new connection. */
	if (!np_in_cluster(&k))
		gates &= ~AXON_LB_PORT_INTERNAL;
	rc = axon_np_new_flow(&k, &fk, gates);
	switch (rc) {
	case AXON_LB_NEW_OK:
		break;
	case AXON_LB_NEW_NO_NAT_PORT:
		*stat = AXON_STAT_DROP_NO_NAT_PORT;
		return -1;
	case AXON_LB_NEW_CT_FULL:
		*stat = AXON_STAT_DROP_CT_FULL;
		return -1;
	case AXON_LB_NEW_SOURCE_DENIED:
		*stat = AXON_STAT_DROP_SOURCE_RANGE;
		return -1;
	default:
		*stat = AXON_STAT_DROP_NO_BACKEND;
		return -1;
	}
apply:
	/* The entry may have expired since: then nothing changed. */
	return ct_apply(skb, p, kind, &k, &l);
}

/*
 * The underlay's service path: a packet np_translate translates is
 * forwarded at once. Returns the verdict, or AXON_NP_NONE for every other
 * packet, which the caller handles as before (nothing changed).
 */
static __always_inline int np_from_underlay(struct __sk_buff *skb, const struct axon_config *cfg)
{
	struct pkt p = {};
	enum parse kind;
	__u32 stat;
	int rc;

	if (!(cfg->flags & AXON_CONFIG_LB))
		return AXON_NP_NONE;
	kind = parse(skb, &p);
	if (kind != PARSE_IPV4 && kind != PARSE_IPV6)
		return AXON_NP_NONE;
	rc = np_translate(skb, &p, kind, &stat);
	if (rc < 0)
		return drop(stat);
	if (!rc)
		return AXON_NP_NONE;
	return np_forward(skb, cfg, &p, kind);
}

#endif /* AXON_NODEPORT_H */
