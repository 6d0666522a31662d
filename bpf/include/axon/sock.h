/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Socket-level load balancing for the node's own processes (bpf/src/sock.c):
 * layouts and maps only the socket programs use. Every simulated node on a
 * machine attaches these programs to the same (root) cgroup, so each acts
 * only for sockets of the network namespace named in its axon_sock_config.
 */
#ifndef AXON_SOCK_H
#define AXON_SOCK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* axon_sock_config: a single entry, key 0, written by the agent. */
struct axon_sock_config {
	/*
	 * bpf_get_netns_cookie() of the node's network namespace; 0 (not yet
	 * written): the programs translate no socket.
	 */
	__u64 netns_cookie;
	__u32 flags; /* reserved, 0 */
	__u32 pad;
};

/*
 * axon_sock_rev: the socket-level reverse translation. A socket the
 * programs connected (or a UDP datagram they sent) to a backend instead of
 * a frontend has an entry keyed by its cookie and the backend: datagrams
 * received from the backend, and the socket's peer name, show the
 * frontend. The agent also finds there the node's sockets to destroy when
 * their backend goes away.
 */
struct axon_sock_rev_key {
	__u64 cookie;   /* bpf_get_socket_cookie() */
	__u8 addr[16];  /* backend address, IPv4 as IPv4-mapped IPv6 */
	__be16 port;    /* backend port */
	__u16 pad;
	__u32 pad2;
};

struct axon_sock_rev {
	__u8 addr[16];    /* frontend address, IPv4 as IPv4-mapped IPv6 */
	__be16 port;      /* frontend port */
	__u16 pad;
	__u32 service_id; /* the frontend entry's id */
};

#define AXON_MAX_SOCK_REV 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct axon_sock_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_sock_config SEC(".maps");

/* LRU: the entries of closed sockets age out on their own. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AXON_MAX_SOCK_REV);
	__type(key, struct axon_sock_rev_key);
	__type(value, struct axon_sock_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} axon_sock_rev SEC(".maps");

#endif /* AXON_SOCK_H */
