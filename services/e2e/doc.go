// Package e2e holds end-to-end tests that run the real binaries: an
// embedded etcd, axon-ipam, simulated nodes with axon-datapath, and pods
// wired by axon-cni through libcni exactly as a container runtime does.
// They need root and skip without it.
package e2e
