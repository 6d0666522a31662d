package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/axon-cni/axon/services/internal/benchreport"
)

// machine describes where the benchmark ran.
type machine = benchreport.Machine

func describeMachine() machine { return benchreport.DescribeMachine() }

func hostLocalVersion(bin string) string { return benchreport.ModuleVersion(bin) }

func ms(d time.Duration) string { return benchreport.Millis(d) }

func ratio(a, b measurement) float64 {
	if b.rate() == 0 {
		return 0
	}
	return a.rate() / b.rate()
}

func metStr(ok bool) string {
	if ok {
		return "**MET**"
	}
	return "**NOT MET**"
}

func cores(m measurement) float64 { return m.CPU.Seconds() / m.Elapsed.Seconds() }

func cpuPerOp(m measurement) string {
	if m.Ops == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", float64(m.CPU.Microseconds())/float64(m.Ops))
}

func clients(n int) string {
	if n == 1 {
		return "1 client"
	}
	return fmt.Sprintf("%d clients", n)
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// renderReport writes the Markdown report.
func renderReport(r *results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	mc := r.Machine

	p("# Axon IPAM benchmark\n\n")
	p("Generated %s by `TestIPAMBenchReport` (`services/ipam/bench`); the whole run took %v.\n",
		r.Start.UTC().Format("2006-01-02 15:04 MST"), r.End.Sub(r.Start).Round(time.Second))
	p("Numbers are from one run on a small VM and are noisy (±10–20%% between runs); compare rows of the same\n")
	p("run, not runs with each other.\n\n")

	p("## Machine\n\n")
	p("- CPU: %s, %d logical CPUs (GOMAXPROCS %d)\n", mc.CPUModel, mc.CPUs, mc.GOMAXPROCS)
	p("- Kernel: %s\n", mc.Kernel)
	p("- Go: %s\n", mc.GoVersion)
	p("- etcd: go.etcd.io/etcd/server/v3 v3.7.3 embedded in the test process (`services/internal/etcdtest`)\n")
	if r.HostLocal != "" {
		p("- host-local: %s\n", r.HostLocalV)
	}
	p("\n")

	p("## How to reproduce\n\n")
	p("From the repository root:\n\n```sh\nmake bench\n```\n\n")
	p("which builds host-local and runs the Go micro-benchmarks, then this report. The report alone:\n\n")
	p("```sh\nGOWORK=off GOBIN=$PWD/.bin go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0\n")
	p("go test ./services/ipam/bench -run TestIPAMBenchReport -count=1 -timeout 30m \\\n")
	p("    -args -ipam.report=$PWD/docs/bench/ipam.md -ipam.hostlocal=$PWD/.bin/host-local -ipam.scale=true")
	if r.Duration != 5*time.Second {
		p(" -ipam.duration=%v", r.Duration)
	}
	if r.Warmup != time.Second {
		p(" -ipam.warmup=%v", r.Warmup)
	}
	if r.NoFsync {
		p(" -ipam.nofsync")
	}
	p("\n```\n\n")
	p("Flags: `-ipam.duration` (measured period per row, here %v), `-ipam.warmup` (here %v), `-ipam.scale`, `-ipam.nofsync`,\n", r.Duration, r.Warmup)
	p("`-ipam.hostlocal`. Without `-ipam.report` the test skips, so `go test ./...` does not run it.\n\n")

	p("## What is measured\n\n")
	p("Everything runs on this one machine, at the same time only one backend: clients, server and etcd share its %d CPUs.\n\n", mc.CPUs)
	p("- **Axon**: `AllocateIP` over gRPC on loopback TCP to an in-process `axon-ipam` server (allocator + gRPC\n")
	p("  server, one etcd client), on (a) a single-member etcd and (b) a 3-member etcd, each member in this process\n")
	p("  with its own data directory and loopback ports. One default IPv4 pool %s with /%d blocks. Each client is\n", poolCIDR, blockBits)
	p("  one simulated node (registered before the run, own gRPC connection) and allocates only on that node, with\n")
	p("  unique container IDs, in a closed loop. The request is what a CNI ADD sends: owner handle, node and pod\n")
	p("  namespace/name, no explicit family.\n")
	p("- **Axon, %d pods/node** (a diagnostic, not the issue's setup): the same, except that each client moves on to\n", podsPerNode)
	p("  another of its own pre-registered nodes every %d allocations (kubelet's default max-pods), so no node holds\n", podsPerNode)
	p("  more addresses than a real node. In the main rows one node receives every allocation of its client — thousands\n")
	p("  of addresses, dozens of blocks — which real nodes never reach.\n")
	p("- **Axon, pods of one node**: the clients are pods starting together on one node, the shape of host-local's rows\n")
	p("  (host-local is per node). They call `AllocateIP` through the node agent's client (`services/ipam/client`, what\n")
	p("  `axon-datapath` uses) on its one gRPC connection: calls made while two are in flight go together in one\n")
	p("  `AllocateIPs` call, whose allocations share etcd transactions. After %d allocations the node is full and all\n", podsPerNode)
	p("  clients move on to the next, fresh node (which claims its blocks, as a node joining the cluster does).\n")
	p("- **raw CAS** (the store's ceiling): on the same etcd at the same concurrency, one shared clientv3 client; each\n")
	p("  worker owns one key, reads it once, then loops `Txn(If(ModRevision(key)==last)).Then(Put(key, %d-byte value))`,\n", casValueSize)
	p("  taking `last` from the response header.\n")
	p("- **gRPC + one CAS** (the ceiling of a gRPC-fronted allocator): the same `AllocateIP` call as Axon's, over the same\n")
	p("  loopback gRPC, answered by a stub server (in this process, its own etcd client) that does nothing but one\n")
	p("  transaction per request — create the handle's key with a %d-byte value if it does not exist — and returns an\n", casValueSize)
	p("  allocation of the size of Axon's. No allocator could do less per allocation and still be a gRPC service with\n")
	p("  one durable write per allocation.\n")
	if r.HostLocal != "" {
		p("- **host-local**: the CNI reference IPAM plugin, exec'd once per allocation as a runtime does (`CNI_COMMAND=ADD`,\n")
		p("  unique `CNI_CONTAINERID`, `CNI_IFNAME=eth0`, range %s, `dataDir` in a temp dir); measured exec to exit.\n", poolCIDR)
	}
	p("- Each row: a %v warm-up (so the first block claim of every node is not the whole story — later block claims,\n", r.Warmup)
	p("  one per %d allocations per node, do fall in the measured period), then %v measured. Allocations/s counts\n", usablePerBlock, r.Duration)
	p("  operations that started and ended inside the measured period; p50/p99 are over those operations.\n")
	p("  \"CPU\" is the CPU time of the whole process (and, for host-local, its children) during the period, in cores\n")
	p("  and per operation.\n")
	if r.NoFsync {
		p("- etcd runs with `UnsafeNoFsync` (`-ipam.nofsync`; 20 ms heartbeat): the raw-CAS ceiling here is a CPU and raft\n")
		p("  ceiling, not a disk one, which makes Axon's fixed per-allocation CPU cost weigh more than it would with fsync.\n\n")
	} else {
		p("- etcd runs as in production: every member fsyncs its write-ahead log before it acknowledges a write (data\n")
		p("  directories on this VM's disk; 20 ms heartbeat). The issue's reference figures (about 1,900 / 3,700 CAS txn/s at\n")
		p("  16 / 64 clients on 3 members, 5,800 / 8,000 on one) were taken that way on a slower disk; the ratios below use\n")
		p("  this run's own raw-CAS rows, measured side by side. `-ipam.nofsync` measures without fsync instead.\n\n")
	}
	p("## Results\n\n")
	for ci, conc := range concurrencies {
		p("### %s\n\n", clients(conc))
		p("| Backend | etcd | allocations/s | p50 | p99 | CPU | CPU/op | / raw CAS | / host-local | errors |\n")
		p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		var hl *measurement
		if ci < len(r.HL) {
			hl = &r.HL[ci]
		}
		for _, s := range setups {
			cas, axon := r.CAS[s.Name], r.Axon[s.Name]
			if ci >= len(cas) || ci >= len(axon) {
				continue
			}
			c, a := cas[ci], axon[ci]
			p("| raw CAS | %s | %.0f | %s | %s | %.2f | %s | | | %d |\n", s.Name, c.rate(), ms(c.P50), ms(c.P99), cores(c), cpuPerOp(c), c.Errors)
			if bare := r.Bare[s.Name]; ci < len(bare) {
				g := bare[ci]
				p("| gRPC + one CAS | %s | %.0f | %s | %s | %.2f | %s | %.2f× | | %d |\n", s.Name, g.rate(), ms(g.P50), ms(g.P99), cores(g), cpuPerOp(g), ratio(g, c), g.Errors)
			}
			hlRatio := "–"
			if hl != nil {
				hlRatio = fmt.Sprintf("%.1f×", ratio(a, *hl))
			}
			p("| **Axon** | %s | **%.0f** | %s | %s | %.2f | %s | %.2f× | %s | %d |\n", s.Name, a.rate(), ms(a.P50), ms(a.P99), cores(a), cpuPerOp(a), ratio(a, c), hlRatio, a.Errors)
			if rot := r.AxonRot[s.Name]; ci < len(rot) {
				a := rot[ci]
				hlRatio := "–"
				if hl != nil {
					hlRatio = fmt.Sprintf("%.1f×", ratio(a, *hl))
				}
				p("| Axon, %d pods/node | %s | %.0f | %s | %s | %.2f | %s | %.2f× | %s | %d |\n", podsPerNode, s.Name, a.rate(), ms(a.P50), ms(a.P99), cores(a), cpuPerOp(a), ratio(a, c), hlRatio, a.Errors)
			}
			if on := r.AxonNode[s.Name]; ci < len(on) {
				a := on[ci]
				hlRatio := "–"
				if hl != nil {
					hlRatio = fmt.Sprintf("%.1f×", ratio(a, *hl))
				}
				p("| **Axon, pods of one node** | %s | **%.0f** | %s | %s | %.2f | %s | %.2f× | %s | %d |\n", s.Name, a.rate(), ms(a.P50), ms(a.P99), cores(a), cpuPerOp(a), ratio(a, c), hlRatio, a.Errors)
			}
		}
		if hl != nil {
			p("| host-local | – | %.0f | %s | %s | %.2f | %s | | | %d |\n", hl.rate(), ms(hl.P50), ms(hl.P99), cores(*hl), cpuPerOp(*hl), hl.Errors)
		}
		p("\n")
	}
	var errLines []string
	for _, s := range setups {
		for _, m := range slices.Concat(r.CAS[s.Name], r.Bare[s.Name], r.Axon[s.Name], r.AxonRot[s.Name], r.AxonNode[s.Name]) {
			if m.FirstEr != "" {
				errLines = append(errLines, fmt.Sprintf("- %s, %s, %s: %s", m.Backend, s.Name, clients(m.Conc), m.FirstEr))
			}
		}
	}
	for _, m := range r.HL {
		if m.FirstEr != "" {
			errLines = append(errLines, fmt.Sprintf("- host-local, %s: %s", clients(m.Conc), m.FirstEr))
		}
	}
	p("**Disturbance.** This machine is shared: a row during which other processes used ≥ %.2f cores (≥ %.2f for\n", quietLimit, quietLimitHostLocal)
	p("host-local, whose process creation and reaping by the kernel partly shows up outside any process) was measured\n")
	p("again, up to %d times, keeping the quietest attempt.", maxTries)
	var busy []string
	var retried int
	for _, s := range setups {
		for _, m := range slices.Concat(r.CAS[s.Name], r.Bare[s.Name], r.Axon[s.Name], r.AxonRot[s.Name], r.AxonNode[s.Name]) {
			if m.Tries > 1 {
				retried++
			}
			if m.othersCores() >= quietLimit {
				busy = append(busy, fmt.Sprintf("%s on %s at %s (%.2f)", m.Backend, s.Name, clients(m.Conc), m.othersCores()))
			}
		}
	}
	for _, m := range r.HL {
		if m.Tries > 1 {
			retried++
		}
		if m.othersCores() >= quietLimitHostLocal {
			busy = append(busy, fmt.Sprintf("host-local at %s (%.2f)", clients(m.Conc), m.othersCores()))
		}
	}
	p(" %d row(s) were measured more than once.", retried)
	if len(busy) > 0 {
		p(" Still disturbed (cores used by others): %s; compare\nthose rows with care.\n\n", strings.Join(busy, ", "))
	} else {
		p(" No row kept was disturbed beyond those limits.\n\n")
	}
	if len(errLines) > 0 {
		p("First error of each row that had one (warm-up included):\n\n%s\n\n", strings.Join(errLines, "\n"))
	}

	p("### etcd requests per Axon allocation\n\n")
	p("Counted by wrapping the allocator's etcd client (`clientv3.Client.KV`), over the measured period. A failed\n")
	p("transaction is one whose compare did not hold (contention or a stale cache), which the allocator retries.\n\n")
	p("| etcd | clients | txns / alloc | failed txns / alloc | reads (Get) / alloc | round trips / alloc |\n")
	p("|---|--:|--:|--:|--:|--:|\n")
	for _, s := range setups {
		for _, rows := range []struct {
			name string
			ms   []measurement
		}{{"", r.Axon[s.Name]}, {fmt.Sprintf(", %d pods/node", podsPerNode), r.AxonRot[s.Name]}, {", pods of one node", r.AxonNode[s.Name]}} {
			for _, a := range rows.ms {
				p("| %s%s | %d | %.3f | %.4f | %.3f | %.3f |\n", s.Name, rows.name, a.Conc, perOp(a.KV.Txns, a.Ops), perOp(a.KV.FailedTxns, a.Ops),
					perOp(a.KV.Gets, a.Ops), perOp(a.KV.RoundTrips(), a.Ops))
			}
		}
	}
	p("\n")

	if r.Scale != nil {
		s := r.Scale
		p("## Scale run\n\n")
		p("%d nodes × %d pods = %d allocations through the gRPC service with %d concurrent clients (each client takes\n",
			s.Nodes, s.PodsPerNode, s.Nodes*s.PodsPerNode, s.Clients)
		p("whole nodes) on a fresh single-member etcd; afterwards every allocation is listed (`ListAllocations`) and\n")
		p("checked for an address held twice.\n\n")
		p("| | |\n|---|--:|\n")
		p("| registering %d nodes | %v |\n", s.Nodes, s.RegisterTime.Round(time.Millisecond))
		p("| allocations (successful / failed) | %d / %d |\n", s.Allocations, s.Errors)
		p("| elapsed | %v |\n", s.Elapsed.Round(time.Millisecond))
		p("| allocations/s | %.0f |\n", float64(s.Allocations)/s.Elapsed.Seconds())
		p("| latency p50 / p99 / max | %s / %s / %s |\n", ms(s.P50), ms(s.P99), ms(s.Max))
		p("| CPU (whole process) | %.2f cores, %.0f µs per allocation |\n", s.CPU.Seconds()/s.Elapsed.Seconds(), float64(s.CPU.Microseconds())/float64(max(s.Allocations, 1)))
		p("| CPU used by other processes meanwhile | %.2f cores |\n", s.Others.Seconds()/s.Elapsed.Seconds())
		p("| etcd round trips / allocation (txns, failed txns, reads) | %.3f (%.3f, %.4f, %.3f) |\n", perOp(s.KV.RoundTrips(), s.Allocations),
			perOp(s.KV.Txns, s.Allocations), perOp(s.KV.FailedTxns, s.Allocations), perOp(s.KV.Gets, s.Allocations))
		p("| allocations listed afterwards | %d |\n", s.Listed)
		p("| duplicate addresses | **%d** |\n", s.Duplicates)
		p("| address keys in etcd (pods + one router IP per node) | %d |\n", s.AllocKeys)
		p("| blocks claimed | %d |\n", s.Blocks)
		p("| verification (list + check) | %v |\n", s.VerifyTime.Round(time.Millisecond))
		p("| Go heap in use after the run (after GC) | %s (%s after registering the nodes) |\n", mib(s.HeapInuse), mib(s.HeapBefore))
		p("| Go runtime memory from the OS (`Sys`) | %s |\n", mib(s.Sys))
		if s.DBSize > 0 {
			p("| etcd database size | %s |\n", mib(uint64(s.DBSize)))
		}
		p("\n")
		p("The heap and `Sys` figures are of the whole test process: the IPAM service (allocator caches, gRPC server), the\n")
		p("64 gRPC clients and the embedded etcd member (its in-memory index of every key) together; the IPAM service\n")
		p("alone is a part of that.\n\n")
		if s.FirstErr != "" {
			p("First error: `%s`\n\n", s.FirstErr)
		}
		if s.Description != "" {
			p("First duplicate: %s\n\n", s.Description)
		}
	}

	renderProfiles(&b, r)
	renderTargets(&b, r)
	renderAnalysis(&b, r)
	return b.String()
}

// renderTargets checks the targets.
func renderTargets(b *strings.Builder, r *results) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Targets (issue 3, \"Benchmark\")\n\n")
	p("| Target | Measured | Status |\n|---|---|---|\n")
	for _, s := range setups {
		for i, a := range r.Axon[s.Name] {
			c := r.CAS[s.Name][i]
			bare := ""
			if bs := r.Bare[s.Name]; i < len(bs) {
				bare = fmt.Sprintf(" (gRPC + one CAS, no allocator: %.2f×)", ratio(bs[i], c))
			}
			p("| Axon ≥ 0.8× raw CAS, %s, %s | %.0f vs %.0f/s = %.2f×%s | %s |\n", s.Name, clients(a.Conc), a.rate(), c.rate(), ratio(a, c), bare, metStr(ratio(a, c) >= 0.8))
			if on := r.AxonNode[s.Name]; i < len(on) && a.Conc > 1 {
				o := on[i]
				p("| … with the clients as pods of one node (coalesced) | %.0f vs %.0f/s = %.2f× | %s |\n", o.rate(), c.rate(), ratio(o, c), metStr(ratio(o, c) >= 0.8))
			}
		}
	}
	for _, s := range setups {
		for i, a := range r.Axon[s.Name] {
			if i >= len(r.HL) {
				p("| Axon ≥ 10× host-local, %s, %s | host-local not run | **NOT MEASURED** |\n", s.Name, clients(a.Conc))
				continue
			}
			h := r.HL[i]
			p("| Axon ≥ 10× host-local, %s, %s | %.0f vs %.0f/s = %.1f× | %s |\n", s.Name, clients(a.Conc), a.rate(), h.rate(), ratio(a, h), metStr(ratio(a, h) >= 10))
			if on := r.AxonNode[s.Name]; i < len(on) && a.Conc > 1 {
				o := on[i]
				p("| … with the clients as pods of one node (host-local's shape) | %.0f vs %.0f/s = %.1f× | %s |\n", o.rate(), h.rate(), ratio(o, h), metStr(ratio(o, h) >= 10))
			}
		}
	}
	for _, s := range setups {
		if s.Members != 3 {
			continue
		}
		for _, a := range r.Axon[s.Name] {
			if a.Conc == 16 {
				p("| p99 ≤ 25 ms at 16 clients on 3 members | %s | %s |\n", ms(a.P99), metStr(a.P99 > 0 && a.P99 <= 25*time.Millisecond))
				for _, o := range r.AxonNode[s.Name] {
					if o.Conc == 16 {
						p("| … with the clients as pods of one node (coalesced) | %s | %s |\n", ms(o.P99), metStr(o.P99 > 0 && o.P99 <= 25*time.Millisecond))
					}
				}
			}
		}
	}
	switch s := r.Scale; {
	case s == nil:
		p("| Scale run 5,000 nodes × 30 pods, no duplicate | not run (`-ipam.scale=false`) | **NOT MEASURED** |\n")
	default:
		ok := s.Duplicates == 0 && s.Errors == 0 && s.Listed == s.Nodes*s.PodsPerNode
		p("| Scale run 5,000 nodes × 30 pods, no duplicate; time and memory reported | %d allocated, %d listed, %d duplicates, %v, heap %s | %s |\n",
			s.Allocations, s.Listed, s.Duplicates, s.Elapsed.Round(time.Second), mib(s.HeapInuse), metStr(ok))
	}
	p("\n")
}

// profileRows is how many IPAM functions a profile table shows.
const profileRows = 14

// renderProfiles shows the IPAM functions of each CPU profile.
func renderProfiles(b *strings.Builder, r *results) {
	if len(r.Profiles) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## CPU profiles\n\n")
	p("Separate %v runs of Axon (gRPC, %d clients, fresh nodes) under the Go CPU profiler, summarized with\n", profileDur, profileConc)
	p("`go tool pprof -top -cum`. Shares are of all CPU samples of the process — load generator, gRPC, IPAM server\n")
	p("and etcd together — so they show what an allocation spends its CPU on. Only functions of `services/ipam` are\n")
	p("listed (cumulative: including what they call, etcd client calls too).\n\n")
	for _, s := range r.Profiles {
		p("### %s\n\n", s.Title)
		if s.Err != "" {
			p("No profile: %s\n\n", s.Err)
			continue
		}
		p("%d blocks claimed in the cluster; %.0f allocations/s while profiled; %s.\n\n", s.Blocks, s.Rate, s.Samples)
		p("| function | cum %% of process CPU |\n|---|--:|\n")
		for i, f := range s.Funcs {
			if i == profileRows {
				break
			}
			p("| `%s` | %.1f%% |\n", f.Name, f.Cum)
		}
		p("\n")
	}
}
