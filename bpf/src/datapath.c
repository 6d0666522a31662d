// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * Axon's node datapath: tcx programs loaded once per node and shared by all
 * endpoints. Everything per endpoint lives in maps (axon/datapath.h), so
 * wiring a pod is a map write and a tcx attach, never a compile or load.
 *
 *   axon_from_pod      tcx ingress of every pod's host-side veth (lxc*):
 *                      packets the pod sends.
 *   axon_from_overlay  tcx ingress of axon_vxlan (decapsulated frames) or, in
 *                      native mode, of the underlay device: delivers packets
 *                      for local pods.
 *
 * IPv4 only for now. Anything else (ARP, IPv6) returns AXON_TCX_NEXT so the
 * kernel handles it; IPv6 gets its own handler next to handle_ipv4 later.
 *
 * Redirect helpers only record the target and return AXON_TCX_REDIRECT; the
 * kernel acts after the program ends. Counters are therefore bumped before
 * the helper is called.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "axon/datapath.h"
#include "axon/license.h"
#include "axon/tcx.h"

#define AXON_AF_INET 2 /* <sys/socket.h> is not for BPF targets */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, struct axon_endpoint_key);
	__type(value, struct axon_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_REMOTES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_remote_key4);
	__type(value, struct axon_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_remote4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct axon_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXON_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_stats SEC(".maps");

/*
 * The enums are only used as constants, which clang does not describe in
 * BTF. These unused pointers in a section no program references make clang
 * emit them so that bpf2go -type can export them; the loader ignores the
 * section.
 */
const enum axon_stat *__axon_stat_btf __attribute__((unused, section(".axon_btf")));
const enum axon_mode *__axon_mode_btf __attribute__((unused, section(".axon_btf")));

static __always_inline void count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&axon_stats, &stat);

	if (c)
		*c += 1; /* per-CPU: no atomics needed */
}

static __always_inline int next(__u32 stat)
{
	count(stat);
	return AXON_TCX_NEXT;
}

static __always_inline int drop(__u32 stat)
{
	count(stat);
	return AXON_TCX_DROP;
}

enum parse {
	PARSE_IPV4,
	PARSE_OTHER,     /* not IPv4: leave it to the kernel */
	PARSE_MALFORMED, /* truncated or invalid: drop */
};

/*
 * Finds the Ethernet and IPv4 headers. The headers of locally generated
 * packets are always in the linear area; for anything else (e.g. a GRO'd
 * frame from the underlay) they are pulled in first, and a frame that is
 * still too short after that really is truncated.
 */
static __always_inline enum parse parse_ipv4(struct __sk_buff *skb, struct ethhdr **ethp, struct iphdr **ipp)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_OTHER;
	if ((void *)(ip + 1) > data_end) {
		if (bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*ip)) < 0)
			return PARSE_MALFORMED;
		/* The pull invalidated every packet pointer: reload them. */
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		eth = data;
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return PARSE_MALFORMED;
	}
	/* Options (ihl > 5) are fine: only TTL and checksum are touched. */
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;

	*ethp = eth;
	*ipp = ip;
	return PARSE_IPV4;
}

/*
 * Decrements the TTL and updates the header checksum incrementally, as the
 * kernel's ip_decrease_ttl(): the TTL is the high byte of its 16-bit word, so
 * the word drops by 0x0100 and the one's-complement checksum rises by as
 * much. The addition works on the raw (network-order) value because one's
 * complement sums are byte-order independent; the final term folds the
 * carry.
 */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

static __always_inline const struct axon_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&axon_config, &zero);
}

static __always_inline const struct axon_endpoint *endpoint4(__u32 ip4)
{
	struct axon_endpoint_key key = { .ip4 = ip4 };

	return bpf_map_lookup_elem(&axon_endpoints, &key);
}

/*
 * Hands the packet to a pod on this node: it arrives at the pod's interface
 * as if the host-side veth had sent it (redirect_peer skips the node's
 * stack, so the node needs no route to the pod). The node acts as the pod's
 * router, hence the TTL decrement and the router MAC as source.
 */
static __always_inline int deliver_local(struct ethhdr *eth, struct iphdr *ip,
					 const struct axon_endpoint *ep, __u32 stat)
{
	if (ip->ttl <= 1)
		return drop(AXON_STAT_DROP_TTL);
	ipv4_dec_ttl(ip);
	__builtin_memcpy(eth->h_dest, ep->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ep->host_mac, ETH_ALEN);
	count(stat);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/*
 * Encapsulates towards the node that owns the destination block. The inner
 * frame keeps its MACs and TTL: the receiving node rewrites both when it
 * delivers (one routed hop per node pair, as with kernel VXLAN routing).
 */
static __always_inline int set_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				      const struct axon_remote *remote)
{
	struct bpf_tunnel_key key;

	/* Whole struct zeroed: the helper reads it all, padding included. */
	__builtin_memset(&key, 0, sizeof(key));
	key.tunnel_id = AXON_TUNNEL_VNI;
	/* The helper takes host byte order (it applies cpu_to_be32). */
	key.remote_ipv4 = bpf_ntohl(remote->node_ip4);
	key.local_ipv4 = bpf_ntohl(cfg->node_ip4); /* 0: the kernel picks */
	key.tunnel_ttl = AXON_TUNNEL_TTL;
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
}

static __always_inline int to_tunnel(struct __sk_buff *skb, const struct axon_config *cfg,
				     const struct axon_remote *remote)
{
	if (set_tunnel(skb, cfg, remote) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	count(AXON_STAT_FWD_TUNNEL);
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/*
 * Routes through the node's FIB (routes for remote blocks are installed via
 * netlink) and lets redirect_neigh resolve the next hop's MAC. FWD_DISABLED
 * (ip_forward off), local or unreachable destinations go to the kernel.
 */
static __always_inline int to_native(struct __sk_buff *skb, struct iphdr *ip)
{
	struct bpf_fib_lookup fib;
	struct bpf_redir_neigh nh;
	long rc;

	if (ip->ttl <= 1)
		return drop(AXON_STAT_DROP_TTL);

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AXON_AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	/* tot_len stays 0: no MTU check here, the egress device does it. */
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* NO_NEIGH has still filled in ifindex and the next hop (ipv4_dst). */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return next(AXON_STAT_FIB_MISS);

	ipv4_dec_ttl(ip);
	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = AXON_AF_INET;
	nh.ipv4_nh = fib.ipv4_dst;
	count(AXON_STAT_FWD_NATIVE);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int from_pod_ipv4(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip)
{
	const struct axon_config *cfg = config();
	const struct axon_endpoint *ep;
	const struct axon_remote *remote;
	struct axon_remote_key4 key;

	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);

	ep = endpoint4(ip->daddr);
	if (ep)
		return deliver_local(eth, ip, ep, AXON_STAT_FWD_LOCAL);

	/*
	 * Only pod blocks of other nodes are forwarded here. Everything else
	 * (the node, other hosts, the outside) takes the kernel's path, where
	 * netfilter masquerades pod sources leaving the cluster.
	 */
	key.prefixlen = 32;
	key.ip4 = ip->daddr;
	remote = bpf_map_lookup_elem(&axon_remote4, &key);
	if (!remote)
		return next(AXON_STAT_TO_HOST);

	switch (cfg->mode) {
	case AXON_MODE_TUNNEL:
		return to_tunnel(skb, cfg, remote);
	case AXON_MODE_NATIVE:
		return to_native(skb, ip);
	default:
		return next(AXON_STAT_TO_HOST);
	}
}

SEC("tc")
int axon_from_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;

	switch (parse_ipv4(skb, &eth, &ip)) {
	case PARSE_IPV4:
		return from_pod_ipv4(skb, eth, ip);
	case PARSE_OTHER:
		return next(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}
}

SEC("tc")
int axon_from_overlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	const struct axon_endpoint *ep;
	struct ethhdr *eth;
	struct iphdr *ip;

	switch (parse_ipv4(skb, &eth, &ip)) {
	case PARSE_IPV4:
		break;
	case PARSE_OTHER:
		return next(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}

	cfg = config();
	if (!cfg || cfg->mode == AXON_MODE_NONE)
		return next(AXON_STAT_UNCONFIGURED);

	ep = endpoint4(ip->daddr);
	if (!ep)
		return next(AXON_STAT_OVERLAY_TO_HOST);
	return deliver_local(eth, ip, ep, AXON_STAT_OVERLAY_LOCAL);
}

AXON_BPF_LICENSE();

/*
 * tcx egress of axon_vxlan: packets the node's own stack routes into the
 * overlay (the node, or masqueraded traffic, towards a remote pod) get the
 * tunnel endpoint of the destination's block. Without one the flow-based
 * device could not send them, so they are dropped and counted.
 */
SEC("tc")
int axon_to_overlay(struct __sk_buff *skb)
{
	const struct axon_config *cfg;
	const struct axon_remote *remote;
	struct axon_remote_key4 key;
	struct ethhdr *eth;
	struct iphdr *ip;

	switch (parse_ipv4(skb, &eth, &ip)) {
	case PARSE_IPV4:
		break;
	case PARSE_OTHER:
		return drop(AXON_STAT_NON_IPV4);
	default:
		return drop(AXON_STAT_DROP_MALFORMED);
	}
	cfg = config();
	if (!cfg || cfg->mode != AXON_MODE_TUNNEL)
		return drop(AXON_STAT_UNCONFIGURED);
	key.prefixlen = 32;
	key.ip4 = ip->daddr;
	remote = bpf_map_lookup_elem(&axon_remote4, &key);
	if (!remote || set_tunnel(skb, cfg, remote) < 0)
		return drop(AXON_STAT_DROP_TUNNEL);
	count(AXON_STAT_FWD_TUNNEL);
	return AXON_TCX_NEXT;
}
