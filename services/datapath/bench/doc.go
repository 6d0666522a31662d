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
// Without -dp.report, or without root, it skips. Every namespace it creates
// itself is anonymous (it disappears with the test process); the Axon
// clusters it starts remove their own namespaces and pins when they stop.
// No packet leaves the machine: every address lives only inside those
// namespaces.
package bench
