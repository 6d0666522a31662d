// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * Socket-level load balancing for the node's own processes, attached to
 * the root cgroup (v2) with cgroup links:
 *
 *   axon_sock_connect4/6      connect(): a TCP or UDP socket connecting to
 *                             a frontend connects to one of its backends
 *   axon_sock_sendmsg4/6      an unconnected UDP datagram to a frontend
 *                             goes to one of its backends
 *   axon_sock_recvmsg4/6      a UDP datagram from that backend shows the
 *                             frontend as its source
 *   axon_sock_getpeername4/6  the socket's peer shows the frontend
 *
 * The node's sockets never meet the per-packet translation (axon_from_pod
 * sees only pods' packets): translating the address once, when the socket
 * picks it, costs nothing per packet and needs no connection tracking.
 * Pods keep the per-packet translation; their sockets live in their own
 * network namespaces, which these programs leave alone, as they leave the
 * sockets of every other node simulated on the same machine: each node's
 * programs act only in the namespace named in its axon_sock_config.
 *
 * Every program allows the call (returns 1), except a connect() or
 * sendmsg() to a frontend without any backend: refused (ECONNREFUSED).
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "axon/ct.h"
#include "axon/datapath.h"
#include "axon/lb.h"
#include "axon/license.h"
#include "axon/maps.h"
#include "axon/sock.h"

/* Whether ctx's socket lives in this node's network namespace. */
static __always_inline int sock_of_node(struct bpf_sock_addr *ctx)
{
	const struct axon_sock_config *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&axon_sock_config, &zero);
	return c && c->netns_cookie && c->netns_cookie == bpf_get_netns_cookie(ctx);
}

/* The socket's protocol, if the load balancer translates it; else 0. */
static __always_inline __u8 sock_proto(const struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP)
		return ctx->protocol;
	return 0;
}

/* The call's address in the programs' form (IPv4 as IPv4-mapped IPv6). */
static __always_inline void sock_addr(const struct bpf_sock_addr *ctx, int v6, __u8 *a)
{
	__u32 w[4];

	if (!v6) {
		ct_map4(a, ctx->user_ip4);
		return;
	}
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(a, w, sizeof(w));
}

static __always_inline void sock_set_addr(struct bpf_sock_addr *ctx, int v6, const __u8 *a)
{
	__u32 w[4];

	__builtin_memcpy(w, a, sizeof(w));
	if (!v6) {
		ctx->user_ip4 = w[3];
		return;
	}
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

/* Whether a (programs' form) is :: or ::ffff:0.0.0.0: the node itself. */
static __always_inline int sock_addr_any(const __u8 *a)
{
	__u32 w[4];

	__builtin_memcpy(w, a, sizeof(w));
	return !(w[0] | w[1] | w[3]) && (!w[2] || w[2] == bpf_htonl(0xffff));
}

/*
 * connect() or sendmsg() to a frontend: the call goes to a backend picked
 * as for a pod's new connection, and the socket remembers the frontend
 * (axon_sock_rev). A full axon_sock_rev still translates: then replies
 * show the backend's address, which a connected UDP socket ignores.
 */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx, int v6)
{
	struct axon_lb_service svc;
	struct axon_lb_backend be;
	struct axon_sock_rev_key rk;
	struct axon_sock_rev rv;
	struct axon_ct_key k;
	__u32 gates;

	if (!sock_of_node(ctx))
		return 1;
	__builtin_memset(&k, 0, sizeof(k));
	k.proto = sock_proto(ctx);
	if (!k.proto)
		return 1;
	sock_addr(ctx, v6, k.daddr);
	k.dport = (__be16)ctx->user_port;
	/* Node ports' wildcard entries are for packets, not for this. */
	if (sock_addr_any(k.daddr))
		return 1;
	gates = lb_port(k.dport);
	if (!lb_service(&k, gates))
		return 1;
	if (lb_pick(&k, gates, &svc, &be) < 0) {
		/* As a connection to a port nobody listens on. */
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be.addr, sizeof(rk.addr));
	rk.port = be.port;
	__builtin_memset(&rv, 0, sizeof(rv));
	__builtin_memcpy(rv.addr, k.daddr, sizeof(rv.addr));
	rv.port = k.dport;
	rv.service_id = svc.id;
	bpf_map_update_elem(&axon_sock_rev, &rk, &rv, BPF_ANY);

	sock_set_addr(ctx, v6, be.addr);
	ctx->user_port = be.port;
	return 1;
}

/* recvmsg() or getpeername(): a translated socket's backend shows as the frontend. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx, int v6)
{
	const struct axon_sock_rev *rv;
	struct axon_sock_rev_key rk;

	if (!sock_of_node(ctx))
		return 1;
	__builtin_memset(&rk, 0, sizeof(rk));
	rk.cookie = bpf_get_socket_cookie(ctx);
	sock_addr(ctx, v6, rk.addr);
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&axon_sock_rev, &rk);
	if (!rv)
		return 1;
	sock_set_addr(ctx, v6, rv->addr);
	ctx->user_port = rv->port;
	return 1;
}

SEC("cgroup/connect4")
int axon_sock_connect4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 0); }

SEC("cgroup/connect6")
int axon_sock_connect6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 1); }

SEC("cgroup/sendmsg4")
int axon_sock_sendmsg4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 0); }

SEC("cgroup/sendmsg6")
int axon_sock_sendmsg6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 1); }

SEC("cgroup/recvmsg4")
int axon_sock_recvmsg4(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, 0); }

SEC("cgroup/recvmsg6")
int axon_sock_recvmsg6(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, 1); }

SEC("cgroup/getpeername4")
int axon_sock_getpeername4(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, 0); }

SEC("cgroup/getpeername6")
int axon_sock_getpeername6(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, 1); }

AXON_BPF_LICENSE();
