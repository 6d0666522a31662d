// Package bench holds the IPAM benchmark behind `make bench`: it measures
// Axon's AllocateIP over gRPC on a single-member and a 3-member etcd side by
// side with the ceiling of the store (raw etcd compare-and-swap
// transactions on the same etcd) and with the CNI reference host-local IPAM
// plugin, at 1, 16 and 64 concurrent clients, plus a scale run of 150,000
// allocations, and writes a Markdown report (docs/bench/ipam.md).
//
// It is a test that only runs when given a report path:
//
//	go test ./services/ipam/bench -run TestIPAMBenchReport -count=1 -timeout 30m \
//	    -args -ipam.report=$PWD/docs/bench/ipam.md -ipam.hostlocal=$PWD/.bin/host-local -ipam.scale=true
//
// Without -ipam.report it skips, so `go test ./...` stays fast.
package bench
