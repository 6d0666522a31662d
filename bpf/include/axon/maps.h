/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The datapath's maps and their lookups. Every object includes this
 * header, so each declares all of them with the same definition; the loader
 * (bpf/datapath) creates or opens each map once and hands the same map to
 * every object. The layout of keys and values is axon/datapath.h's.
 */
#ifndef AXON_MAPS_H
#define AXON_MAPS_H

#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

#include "axon/datapath.h"

/* Every pod on this node by IPv4 address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, struct axon_endpoint_key);
	__type(value, struct axon_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_endpoints SEC(".maps");

/*
 * Pods' host-side veths (ifindex) and the pod each belongs to (an opaque
 * key): a pod with several Axon attachments may send any of its addresses
 * out of any of its veths.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_devices SEC(".maps");

/* Other nodes' IPv4 pod blocks. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_REMOTES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_remote_key4);
	__type(value, struct axon_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_remote4 SEC(".maps");

/* Every pod on this node by IPv6 address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_ENDPOINTS);
	__type(key, struct axon_endpoint_key6);
	__type(value, struct axon_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_endpoints6 SEC(".maps");

/* Other nodes' IPv6 pod blocks. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_REMOTES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_remote_key6);
	__type(value, struct axon_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_remote6 SEC(".maps");

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

/* Service frontends (axon/lb.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_LB_SERVICES);
	__type(key, struct axon_lb_key);
	__type(value, struct axon_lb_service);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_services SEC(".maps");

/* Frontends' backends, by slot and generation (axon/lb.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_LB_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct axon_lb_slot_key);
	__type(value, struct axon_lb_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_slots SEC(".maps");

/* The agent's data about each frontend, by service id; no program reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_LB_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct axon_lb_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_meta SEC(".maps");

/*
 * The connection tracker (axon/ct.h). A plain hash, not LRU: a full map
 * refuses new flows visibly (drop-ct-full) instead of silently evicting
 * live ones. The agent expires idle entries.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_CT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct axon_ct_key);
	__type(value, struct axon_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_ct SEC(".maps");

/* Port gates of the frontend lookups (datapath.h, AXON_LB_PORT_*). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXON_LB_PORTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_ports SEC(".maps");

/* Port gates of the tracker's REPLY lookups (datapath.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXON_LB_PORTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_ct_ports SEC(".maps");

/* Session affinity: a client's backend per frontend entry (axon/affinity.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AXON_MAX_LB_AFFINITY);
	__type(key, struct axon_lb_affinity_key);
	__type(value, struct axon_lb_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_affinity SEC(".maps");

/* Frontend entries' allowed client prefixes (axon/srcrange.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, AXON_MAX_LB_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct axon_lb_source_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_source_ranges SEC(".maps");

/* Frontend entries' Maglev tables, by generation (axon/maglev.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_LB_MAGLEV);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct axon_lb_maglev_key);
	__type(value, struct axon_lb_maglev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_lb_maglev SEC(".maps");

/* This node's own addresses (axon/nodeport.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXON_MAX_NODE_ADDRS);
	__type(key, struct axon_node_addr);
	__type(value, struct axon_node_addr_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_node_addrs SEC(".maps");

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

static __always_inline const struct axon_endpoint *endpoint6(const struct in6_addr *ip6)
{
	struct axon_endpoint_key6 key;

	__builtin_memcpy(key.ip6, ip6, sizeof(key.ip6));
	return bpf_map_lookup_elem(&axon_endpoints6, &key);
}

/* The block of another node that holds ip4 (longest prefix), or NULL. */
static __always_inline const struct axon_remote *remote4(__u32 ip4)
{
	struct axon_remote_key4 key = { .prefixlen = 32, .ip4 = ip4 };

	return bpf_map_lookup_elem(&axon_remote4, &key);
}

static __always_inline const struct axon_remote *remote6(const struct in6_addr *ip6)
{
	struct axon_remote_key6 key;

	key.prefixlen = 128;
	__builtin_memcpy(key.ip6, ip6, sizeof(key.ip6));
	return bpf_map_lookup_elem(&axon_remote6, &key);
}

/*
 * Whether src is a pod's address, on this node or in another node's block.
 * Traffic between pods skips the node's stack on both ends, so the node's
 * connection tracking sees neither direction. A packet from anything else
 * (another node's own address, an outside router) must come in through the
 * kernel: otherwise the pod's reply, which takes the kernel's path out,
 * would look like a new connection and be masqueraded.
 */
static __always_inline int pod_src4(__u32 saddr)
{
	return endpoint4(saddr) || remote4(saddr);
}

static __always_inline int pod_src6(const struct in6_addr *saddr)
{
	return endpoint6(saddr) || remote6(saddr);
}

/* Whether addr (16 bytes, IPv4 mapped) is one of this node's addresses. */
static __always_inline int node_addr(const __u8 *addr)
{
	const struct axon_node_addr_value *v;
	struct axon_node_addr key;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	v = bpf_map_lookup_elem(&axon_node_addrs, &key);
	return v && (v->flags & AXON_NODE_ADDR_OWN);
}

#endif /* AXON_MAPS_H */
