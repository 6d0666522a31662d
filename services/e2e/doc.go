// Package e2e holds end-to-end tests that run the real binaries: an
// embedded etcd, axon-ipam, simulated nodes with axon-datapath, and pods
// wired by axon-cni through libcni exactly as a container runtime does.
// Those need root and BPF: without them they skip and say why, and under CI
// they fail instead (see bpf/testenv).
//
// A few tests need no root: they join services in one process, such as
// TestStartOnHostScopePodCIDR, which runs the datapath's agent on fakes
// against the real IPAM. They live here because the datapath's packages may
// not import the IPAM service's.
package e2e
