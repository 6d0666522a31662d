/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * tcx verdicts (enum tcx_action_base, Linux 6.6+).
 *
 * Debian 12's linux-libc-dev (6.1) lacks them. They carry an AXON_ prefix
 * because newer <linux/bpf.h> declares TCX_NEXT etc. as enum members, which a
 * plain #define of the same name would break.
 *
 *	AXON_TCX_NEXT      let the next program in the tcx chain decide; if this
 *	                   is the last one, the packet continues as with PASS
 *	AXON_TCX_PASS      accept the packet and end the chain
 *	AXON_TCX_DROP      drop the packet
 *	AXON_TCX_REDIRECT  the value bpf_redirect*() helpers return; the redirect
 *	                   happens after the program ends
 */
#ifndef AXON_TCX_H
#define AXON_TCX_H

#define AXON_TCX_NEXT (-1)
#define AXON_TCX_PASS 0
#define AXON_TCX_DROP 2
#define AXON_TCX_REDIRECT 7

#endif /* AXON_TCX_H */
