/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * License of every Axon BPF object.
 *
 * The kernel reads the "license" ELF section to decide whether a program may
 * call GPL-only helpers. "Dual MIT/GPL" is GPL-compatible, so all helpers are
 * available. Each C source in bpf/src declares it exactly once:
 *
 *	AXON_BPF_LICENSE();
 */
#ifndef AXON_LICENSE_H
#define AXON_LICENSE_H

#define AXON_LICENSE "Dual MIT/GPL"

#define AXON_BPF_LICENSE() \
	char __license[] __attribute__((section("license"), used)) = AXON_LICENSE

#endif /* AXON_LICENSE_H */
