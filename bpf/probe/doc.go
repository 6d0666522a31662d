// Package probe loads axon_probe, a tcx program that counts the packets and
// bytes passing an interface and never changes forwarding (it returns
// TCX_NEXT). It is the proof of the bpf2go pipeline: C in bpf/src, shared
// headers in bpf/include, generated Go and object committed here.
//
// As in cilium/ebpf, parsing and loading are separate: the embedded object is
// parsed into a spec without privileges; [Load] sets the direction and loads
// it into the kernel, which needs CAP_BPF (and CAP_NET_ADMIN to attach).
package probe
