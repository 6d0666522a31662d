// Package bench holds the datapath and CNI benchmark behind `make bench`.
// In one run, side by side, it measures:
//
//   - CNI ADD and DEL latency through libcni for the real axon-cni binary
//     against the reference ptp + host-local plugins (containernetworking/
//     plugins v1.10.0), sequentially and 16 at a time, and the wall time of
//     100 pods wired at once on one Axon node;
//   - pod-to-pod TCP stream throughput (iperf3) and 1-byte request/response
//     latency (a Go ping-pong over blocking sockets) through Axon's eBPF
//     programs against plain kernel routing without BPF on an identical
//     topology: same node, across nodes in native mode (vs plain routing)
//     and in tunnel mode (vs a plain kernel VXLAN device);
//   - the per-packet cost of the programs (the BPF_PROG_TEST_RUN benchmarks
//     of bpf/datapath, and the native path measured here);
//   - axon-cni's binary size and exec-to-result time;
//
// and writes a Markdown report (docs/bench/datapath.md).
//
// It needs root and only runs when given a report path:
//
//	go test ./services/datapath/bench -run TestDatapathBenchReport -count=1 -timeout 30m \
//	    -args -dp.report=$PWD/docs/bench/datapath.md -dp.plugins=$PWD/.bin
//
// A second report, docs/bench/services.md (TestServiceBenchReport, gated
// by -svc.report), compares service translation at 0, 1k, 10k and 100k
// services: kube-proxy-style iptables rulesets (iptables-legacy-restore
// and iptables-nft-restore), an nftables verdict-map ruleset and Axon's
// eBPF load balancer (through the datapath's UpsertServices; reported as
// pending while that answers Unimplemented), each against a connection
// straight to a backend: new-connection latency and connections/s to the
// last-programmed service, the time to program them all and one more, and
// their memory:
//
//	go test ./services/datapath/bench -run TestServiceBenchReport -count=1 -timeout 30m \
//	    -args -svc.report=$PWD/docs/bench/services.md [-svc.sizes=0,1000]
//
// Without -dp.report (-svc.report), or without root, it skips. Every namespace it creates
// itself is anonymous (it disappears with the test process); the Axon
// clusters it starts remove their own namespaces and pins when they stop.
// No packet leaves the machine: every address lives only inside those
// namespaces.
package bench
