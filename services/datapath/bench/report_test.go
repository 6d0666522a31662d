package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/axon-cni/axon/services/internal/benchreport"
)

// machine describes where the benchmark ran.
type machine struct {
	benchreport.Machine
	Iperf3 string
}

func describeMachine() machine {
	m := machine{Machine: benchreport.DescribeMachine(), Iperf3: "unknown"}
	if out, err := exec.Command("iperf3", "--version").Output(); err == nil {
		m.Iperf3 = strings.SplitN(string(out), "\n", 2)[0]
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func moduleVersion(bin string) string { return benchreport.ModuleVersion(bin) }

func ms(d time.Duration) string { return benchreport.Millis(d) }

func us(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond)) }

func met(ok bool) string {
	if ok {
		return "**MET**"
	}
	return "**NOT MET**"
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB (%d bytes)", float64(n)/(1<<20), n) }

func (r *results) cniRun(target, phase string) (cniRun, bool) {
	for _, c := range r.CNI {
		if c.Target == target && c.Phase == phase {
			return c, true
		}
	}
	return cniRun{}, false
}

func (r *results) scenario(name string) *scenario {
	for _, s := range r.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (r *results) prog(name string) (progBench, bool) {
	for _, p := range r.Prog {
		if p.Name == name {
			return p, true
		}
	}
	return progBench{}, false
}

// target is one of the targets with its verdict.
type target struct {
	What, Measured string
	OK             bool
}

func (r *results) targets() []target {
	var ts []target
	for _, ph := range []string{"sequential", "parallel"} {
		a, ok1 := r.cniRun("axon-cni", ph)
		p, ok2 := r.cniRun("ptp+host-local", ph)
		if ok1 && ok2 {
			label := "sequential"
			if ph == "parallel" {
				label = fmt.Sprintf("%d in parallel", a.Conc)
			}
			ts = append(ts, target{
				What:     "CNI ADD p50 no slower than ptp + host-local (" + label + ")",
				Measured: fmt.Sprintf("axon-cni %s vs ptp %s (%.2f×)", ms(a.Add.P50), ms(p.Add.P50), float64(a.Add.P50)/float64(p.Add.P50)),
				OK:       a.Add.P50 <= p.Add.P50,
			})
		}
	}
	if b, ok := r.cniRun("axon-cni", "burst"); ok {
		ts = append(ts, target{
			What:     fmt.Sprintf("%d pods wired in parallel on one node within 5 s", b.Pods),
			Measured: fmt.Sprintf("%.2f s", b.AddWall.Seconds()),
			OK:       b.AddWall <= 5*time.Second,
		})
	}
	for _, sc := range []struct {
		name string
		min  float64
	}{{"same node", 1.1}, {"across nodes, tunnel", 1.0}, {"across nodes, native", 1.0}} {
		s := r.scenario(sc.name)
		if s == nil {
			continue
		}
		a, p := medianGbps(s.AxonStream), medianGbps(s.PlainStream)
		ts = append(ts, target{
			What:     fmt.Sprintf("TCP throughput %s ≥ %.1f× %s", sc.name, sc.min, s.Plain),
			Measured: fmt.Sprintf("%.2f vs %.2f Gbit/s = %.2f×", a, p, a/p),
			OK:       a >= sc.min*p,
		})
	}
	for _, bs := range r.BigTCP {
		minRatio := 1.0
		if bs.Name == "same node" {
			minRatio = 1.1
		}
		a, p, pb := bs.variant(labelAxonBig), bs.variant(labelPlain), bs.variant(labelPlainBig)
		if a == nil || p == nil {
			continue
		}
		base := bs.Name
		if s := r.scenario(bs.Name); s != nil {
			base = s.Plain
		}
		ag, pg := medianGbps(a.Streams), medianGbps(p.Streams)
		same := "no baseline with 192 KiB GSO"
		if pb != nil {
			same = fmt.Sprintf("against the same baseline with 192 KiB GSO %.2f×", ag/medianGbps(pb.Streams))
		}
		ts = append(ts, target{
			What:     fmt.Sprintf("TCP throughput %s, Axon with `--big-tcp` ≥ %.1f× %s at the kernel's defaults (section 3b)", bs.Name, minRatio, base),
			Measured: fmt.Sprintf("%.2f vs %.2f Gbit/s = %.2f× (%s)", ag, pg, ag/pg, same),
			OK:       ag >= minRatio*pg,
		})
	}
	if r.ProgErr != "" {
		ts = append(ts, target{What: "≤ 100 ns per packet above the empty-program floor (bpf/datapath benchmarks)", Measured: "not measured: the benchmarks failed (see section 4)"})
	}
	if floor, ok := r.prog("BenchmarkEmpty"); ok {
		worst, worstName := 0.0, ""
		for _, p := range r.Prog {
			if p.Name != "BenchmarkEmpty" && p.NsPerOp-floor.NsPerOp > worst {
				worst, worstName = p.NsPerOp-floor.NsPerOp, p.Name
			}
		}
		ts = append(ts, target{
			What:     "≤ 100 ns per packet above the empty-program floor (bpf/datapath benchmarks)",
			Measured: fmt.Sprintf("worst %s: +%.0f ns over %.0f ns", strings.TrimPrefix(worstName, "Benchmark"), worst, floor.NsPerOp),
			OK:       worst <= 100,
		})
	}
	if r.NativeCost > 0 {
		d := r.NativeCost - r.NativeFloor
		ts = append(ts, target{
			What:     "≤ 100 ns per packet above the floor, native path (measured here)",
			Measured: fmt.Sprintf("+%.0f ns over %.0f ns", d, r.NativeFloor),
			OK:       d <= 100,
		})
	}
	return ts
}

func writeReport(path string, r *results) error {
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := r.Machine
	w("# Axon datapath and CNI benchmark\n\n")
	w("Generated by `make bench` (`services/datapath/bench`, `TestDatapathBenchReport`) on %s; the run took %s.\n\n",
		r.Start.UTC().Format("2006-01-02 15:04 MST"), r.End.Sub(r.Start).Round(time.Second))
	w("| Machine | |\n|---|---|\n")
	w("| CPUs (nproc) | %d |\n| CPU | %s |\n| Kernel | %s |\n| Go | %s |\n| iperf3 | %s |\n", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.Iperf3)
	w("| Reference plugins | %s |\n", r.PTPVersion)
	w("| Load average (1/5/15 min) at start / end | %s / %s |\n\n", r.LoadStart, r.LoadEnd)
	w("Numbers from a small VM are noisy: every comparison below is measured side by side in the same run, and\n")
	w("the traffic scenarios alternate Axon and the baseline over %d rounds and report the median.\n\n", *rounds)

	w("## How to reproduce\n\n")
	w("As root, with `iperf3` installed (`apt-get install -y iperf3`):\n\n```sh\n")
	w("make bench   # everything, including this report\n\n# or only this benchmark:\n")
	w("GOBIN=$PWD/.bin GOWORK=off go install github.com/containernetworking/plugins/plugins/main/ptp@v1.10.0\n")
	w("GOBIN=$PWD/.bin GOWORK=off go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0\n")
	w("go test ./services/datapath/bench -run TestDatapathBenchReport -count=1 -timeout 30m \\\n")
	w("    -args -dp.report=$PWD/docs/bench/datapath.md -dp.plugins=$PWD/.bin\n```\n\n")
	w("Parameters of this run: `-dp.seq=%d -dp.par=%d -dp.conc=%d -dp.burst=%d -dp.exec=%d -dp.stream=%s -dp.rr=%s -dp.rounds=%d -dp.progcount=%d`.\n",
		*seqPods, *parPods, *parConc, *burstPods, *execRuns, *streamDur, *rrDur, *rounds, *progCount)
	w("The per-packet numbers come from `cd bpf && go test -run '^$' -bench . -count %d ./datapath/`.\n\n", *progCount)

	w("## Targets (issue 4)\n\n| Target | Measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		w("| %s | %s | %s |\n", t.What, t.Measured, met(t.OK))
	}
	w("\n")

	w("## 1. CNI ADD and DEL through libcni\n\n")
	w("Each pod is a fresh network namespace; libcni's `AddNetworkList` / `DelNetworkList` run the plugin binaries\n")
	w("exactly as a container runtime does, from goroutines whose threads sit in the node's network namespace.\n")
	w("**axon-cni** talks to the node's `axon-datapath` (simulated node `node-1` of a 2-node local cluster: embedded\n")
	w("etcd, axon-ipam, axon-datapath in tunnel mode). **ptp + host-local** (`ipMasq: false`, host-local on\n")
	w("10.99.0.0/16 with its own data dir) runs in %s.\n", r.PTPChoice)
	w("Latency is per call. In the sequential phase the two plugins alternate call by call (so load from the rest\n")
	w("of the machine hits both alike) and \"wall\" is the sum of the calls; the concurrent phases run one plugin\n")
	w("after the other (parallel: Axon first; burst: ptp first) and \"wall\" is the phase's elapsed time. ADD/s is\n")
	w("pods over the ADD wall. 3 pods per plugin are wired and removed first as a warm-up and not counted. With\n")
	w("50 samples p99 is the maximum.\n\n")
	w("| Phase | Plugin | Pods | Concurrent | ADD p50 | ADD p99 | ADD mean | DEL p50 | DEL p99 | ADD wall | DEL wall | ADD/s |\n")
	w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range r.CNI {
		w("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", c.Phase, c.Target, c.Pods, c.Conc,
			ms(c.Add.P50), ms(c.Add.P99), ms(c.Add.Mean), ms(c.Del.P50), ms(c.Del.P99), ms(c.AddWall), ms(c.DelWall),
			float64(c.Pods)/c.AddWall.Seconds())
	}
	w("\nThe *burst* phase starts all %d ADDs at once on one node; its ADD wall time is the \"100 pods within 5 s\" figure.\n\n", *burstPods)

	e := r.Exec
	w("## 2. axon-cni: size and exec-to-result\n\n")
	w("| Binary | Size |\n|---|--:|\n")
	w("| axon-cni (`CGO_ENABLED=0 go build %s`) | %s |\n", strings.Join(quoteArgs(cniBuildFlags), " "), mib(r.AxonCNISize))
	w("| ptp v1.10.0 (`go install`, not stripped) | %s |\n| host-local v1.10.0 (`go install`, not stripped) | %s |\n\n", mib(r.PTPSize), mib(r.HostLocalSize))
	w("Exec-to-result is fork to exit of the binary run directly (no libcni), %d runs each; ADD/DEL on a fresh pod\n", e.AxonVersion.N)
	w("namespace each time. The last rows are the same create/delete through the datapath's gRPC API on one\n")
	w("persistent connection, i.e. the agent's own work without the shim.\n\n")
	w("| Call | p50 | p99 | mean |\n|---|--:|--:|--:|\n")
	for _, row := range []struct {
		name string
		l    latencies
	}{
		{"axon-cni VERSION", e.AxonVersion}, {"ptp VERSION", e.PTPVersion},
		{"axon-cni ADD (exec)", e.AxonAdd}, {"axon-cni DEL (exec)", e.AxonDel},
		{"datapath CreateEndpoint (gRPC, no shim)", e.GRPCCreate}, {"datapath DeleteEndpoint (gRPC, no shim)", e.GRPCDelete},
		{"of which: axon-ipam AllocateIP (gRPC, direct)", e.IPAMAlloc}, {"of which: axon-ipam ReleaseIP (gRPC, direct)", e.IPAMRelease},
	} {
		w("| %s | %s | %s | %s |\n", row.name, ms(row.l.P50), ms(row.l.P99), ms(row.l.Mean))
	}
	w("\nShim overhead on ADD (exec p50 − gRPC p50): %s, of which process start-up (VERSION p50) %s.\n\n",
		ms(e.AxonAdd.P50-e.GRPCCreate.P50), ms(e.AxonVersion.P50))

	w("## 3. Pod-to-pod TCP through Axon's programs vs plain kernel routing\n\n")
	w("Stream: one iperf3 TCP stream (`iperf3 -c SERVER -t %d -O 1 -J`, receiver-side rate) between two pods,\n", int(streamDur.Seconds()))
	w("server and client started with `nsenter --net=POD`. Request/response: one TCP connection, 1-byte request\n")
	w("and 1-byte reply, client and server each on their own thread doing blocking `read`/`write` (like netperf\n")
	w("TCP_RR), %s per round after a 200 ms warm-up; latency is per round trip.\n\n", *rrDur)
	w("Client and server of both tests share CPU %d (`iperf3 -A %d`, `sched_setaffinity` for the ping-pong threads)\n", benchCPU, benchCPU)
	w("on every path. Split across this VM's two vCPUs, a round trip costs about 60 µs of cross-CPU wake-ups and\n")
	w("every iperf3 run retransmits tens of thousands of segments dropped in the veth backlog, which swamps the\n")
	w("difference between datapaths; on one CPU the stream rate is the inverse of the CPU cost per byte of the\n")
	w("whole path (both TCP stacks, the veths, the forwarding) and the round trip is its latency. Both sides of every\n")
	w("row use\n")
	w("identical topologies (namespaces, veth pairs, pod /32 addresses, gateway neighbour entries, MTUs, underlay\n")
	w("bridge); the baseline has no eBPF program anywhere and the kernel routes every packet:\n\n")
	w("- same node: Axon pods on one node vs two pods on a plain node with `/32` routes to host-side veths and\n")
	w("  permanent neighbour entries, `ip_forward=1`;\n")
	w("- across nodes, tunnel: Axon's VXLAN, built and stripped by its programs (the kernel's wire format), vs a plain\n")
	w("  kernel VXLAN device per node (`id 42 remote PEER\n")
	w("  dstport 8472`), a static route for the peer's pod block via a gateway on it and a permanent neighbour\n")
	w("  entry for that gateway (the peer's vxlan MAC);\n")
	w("- across nodes, native: Axon's FIB lookup + `redirect_neigh` out and `redirect_peer` in vs a static route for\n")
	w("  the peer's pod block via the peer's underlay address.\n\n")
	w("| Path | MTU | Axon Gbit/s | Plain Gbit/s | Axon / plain | Axon RR p50 / p99 µs | Plain RR p50 / p99 µs | Axon RR/s | Plain RR/s |\n")
	w("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range r.Scenarios {
		a, p := medianGbps(s.AxonStream), medianGbps(s.PlainStream)
		ar, pr := medianRR(s.AxonRR), medianRR(s.PlainRR)
		w("| %s | %d | %.2f | %.2f | %.2f× | %s / %s | %s / %s | %.0f | %.0f |\n", s.Name, s.AxonMTU, a, p, a/p,
			us(ar.Lat.P50), us(ar.Lat.P99), us(pr.Lat.P50), us(pr.Lat.P99), ar.TPS, pr.TPS)
	}
	w("\nEvery round (Gbit/s; TCP retransmits; sender / receiver CPU %% as iperf3 reports it):\n\n")
	w("| Path | Round | Axon | Plain |\n|---|--:|---|---|\n")
	for _, s := range r.Scenarios {
		for i := range s.AxonStream {
			a, p := s.AxonStream[i], s.PlainStream[i]
			w("| %s | %d | %.2f (retr %d; cpu %.0f / %.0f) | %.2f (retr %d; cpu %.0f / %.0f) |\n", s.Name, i+1,
				a.Gbps, a.Retransmits, a.SenderCPU, a.ReceiverCPU, p.Gbps, p.Retransmits, p.SenderCPU, p.ReceiverCPU)
		}
	}
	writeBigTCP(w, r)
	w("\nAxon's eBPF counters that grew during each scenario (proof the traffic took the programs):\n\n")
	w("| Path | Node | Counter | Packets |\n|---|---|---|--:|\n")
	cs := slices.Clone(r.Counters)
	slices.SortStableFunc(cs, func(a, b counterDelta) int {
		return strings.Compare(a.Node+a.Counter, b.Node+b.Counter)
	})
	var names []string
	for _, s := range r.Scenarios {
		names = append(names, s.Name)
	}
	for _, s := range r.BigTCP {
		names = append(names, s.Name+", BIG TCP")
	}
	for _, name := range names {
		for _, c := range cs {
			if c.Scenario == name {
				w("| %s | %s | %s | %d |\n", c.Scenario, c.Node, c.Counter, c.Delta)
			}
		}
	}
	if s := r.scenario("across nodes, native"); s != nil && counter(r, s.Name, "forwarded-native") == 0 {
		w("\nIn the native scenario `forwarded-native` did not grow at all: the packets were routed by the kernel, not by the\n")
		w("program's FIB lookup (see the Analysis).\n")
	}
	w("\n")

	w("## 4. Per-packet cost (BPF_PROG_TEST_RUN)\n\n")
	w("bpf/datapath's benchmarks run each program on one crafted frame in batches of 200 and report the kernel's\n")
	w("time per run; `BenchmarkEmpty` (an empty `return -1` program) is the harness floor. Median of %d runs.\n\n", *progCount)
	w("| Benchmark | ns/packet | above floor | runs |\n|---|--:|--:|---|\n")
	if r.ProgErr != "" {
		w("**The benchmarks failed in this run:**\n\n```\n%s\n```\n\n", strings.TrimSpace(r.ProgErr))
	}
	if r.NativeErr != "" {
		w("**The native-path measurement failed in this run:** %s\n\n", r.NativeErr)
	}
	floor, _ := r.prog("BenchmarkEmpty")
	for _, p := range r.Prog {
		runs := make([]string, len(p.Runs))
		for i, v := range p.Runs {
			runs[i] = fmt.Sprintf("%.1f", v)
		}
		w("| %s | %.1f | %+.1f | %s |\n", strings.TrimPrefix(p.Name, "Benchmark"), p.NsPerOp, p.NsPerOp-floor.NsPerOp, strings.Join(runs, ", "))
	}
	if r.NativeCost > 0 {
		w("| FromPodNative (here, see below) | %.1f | %+.1f (own floor %.1f) | |\n", r.NativeCost, r.NativeCost-r.NativeFloor, r.NativeFloor)
	}
	w("\nbpf/datapath has no benchmark of the native path: its test namespace has no routes, so the FIB lookup\n")
	w("misses. This benchmark measures it itself: BPF_PROG_TEST_RUN with `__sk_buff.ingress_ifindex` set to a veth\n")
	w("of a namespace that has a route for the remote block and a permanent neighbour for its next hop, so\n")
	w("`bpf_fib_lookup` succeeds and `redirect_neigh` is returned; the empty program is run the same way for its floor.\n\n")

	w("## Analysis\n\n")
	for _, para := range analysis(r) {
		w("%s\n\n", para)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// writeBigTCP writes section 3b, the BIG TCP comparison, if it ran.
func writeBigTCP(w func(string, ...any), r *results) {
	if len(r.BigTCP) == 0 {
		return
	}
	labels := []string{labelAxonBig, labelPlain, labelPlainBig}
	w("\n## 3b. With BIG TCP (`--big-tcp`)\n\n")
	w("The same paths and streams (request/response does not depend on the GSO size) on nodes started with\n")
	w("`--big-tcp`: Axon gives the pods' veth pairs, `axon_host`/`axon_net` and the underlay device GSO and GRO max\n")
	w("sizes of %d bytes (IPv4 and IPv6), so a pod's TCP builds packets of up to 192 KiB instead of 64 KiB. Each\n", bigGSO)
	w("path is compared with the plain baselines of section 3 as they are — pods at the kernel's defaults, as the\n")
	w("reference ptp plugin leaves them — and with the same baselines given 192 KiB on every device (pods' veths,\n")
	w("node devices, the plain VXLAN device, which takes its limit from its lower device, and the underlay). The\n")
	w("underlay bridge's ports take 192 KiB in every run, standing for NICs that segment in hardware. Real NICs merge\n")
	w("received tunnelled packets (GRO) up to 64 KiB only, so in tunnel mode this simulated wire hands the receiving\n")
	w("node larger packets than a real one would: read the tunnel row as the sender's gain plus a receive-side gain\n")
	w("real hardware does not give. The setups take turns in an order that rotates each round; medians of %d rounds,\n", *rounds)
	w("client and server on CPU %d as in section 3.\n\n", benchCPU)
	w("| Path | MTU | %s | %s | %s | Axon / plain defaults | Axon / plain 192 KiB |\n", labels[0], labels[1], labels[2])
	w("|---|--:|--:|--:|--:|--:|--:|\n")
	cell := func(v *streamVariant) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f", medianGbps(v.Streams))
	}
	ratio := func(a, b *streamVariant) string {
		if a == nil || b == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f×", medianGbps(a.Streams)/medianGbps(b.Streams))
	}
	for _, s := range r.BigTCP {
		a, p, pb := s.variant(labels[0]), s.variant(labels[1]), s.variant(labels[2])
		w("| %s | %d | %s | %s | %s | %s | %s |\n", s.Name, s.MTU, cell(a), cell(p), cell(pb), ratio(a, p), ratio(a, pb))
	}
	w("\nEvery round (Gbit/s; TCP retransmits; sender / receiver CPU %%):\n\n")
	w("| Path | Round | %s | %s | %s |\n|---|--:|---|---|---|\n", labels[0], labels[1], labels[2])
	for _, s := range r.BigTCP {
		for i := range *rounds {
			row := make([]string, len(labels))
			for j, l := range labels {
				row[j] = "–"
				if v := s.variant(l); v != nil && i < len(v.Streams) {
					x := v.Streams[i]
					row[j] = fmt.Sprintf("%.2f (retr %d; cpu %.0f / %.0f)", x.Gbps, x.Retransmits, x.SenderCPU, x.ReceiverCPU)
				}
			}
			w("| %s | %d | %s |\n", s.Name, i+1, strings.Join(row, " | "))
		}
	}
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
