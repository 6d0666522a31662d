package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
)

var (
	reportPath = flag.String("dp.report", "", "write the datapath benchmark report (Markdown) to this `path`; the benchmark runs only when set")
	pluginDir  = flag.String("dp.plugins", "", "`directory` holding the reference ptp and host-local plugins (containernetworking/plugins v1.10.0); empty: look them up in PATH")
	seqPods    = flag.Int("dp.seq", 50, "pods wired one at a time per CNI configuration")
	parPods    = flag.Int("dp.par", 96, "pods wired with -dp.conc concurrent ADDs (and DELs)")
	parConc    = flag.Int("dp.conc", 16, "concurrent CNI calls in the parallel phase")
	burstPods  = flag.Int("dp.burst", 100, "pods wired all at once on one node (the 5 s target)")
	execRuns   = flag.Int("dp.exec", 30, "runs of each exec-to-result measurement")
	streamDur  = flag.Duration("dp.stream", 4*time.Second, "measured time of each iperf3 run (after a 1 s omitted warm-up)")
	rrDur      = flag.Duration("dp.rr", 2*time.Second, "measured time of each request/response run")
	rounds     = flag.Int("dp.rounds", 5, "alternating Axon/plain rounds per traffic scenario (the median is reported)")
	progCount  = flag.Int("dp.progcount", 3, "-count of the BPF_PROG_TEST_RUN benchmarks (the median is reported)")
)

// results is everything the report shows.
type results struct {
	Start, End         time.Time
	LoadStart, LoadEnd string // /proc/loadavg: the VM may be shared
	Machine            machine
	Root               string

	AxonCNISize, PTPSize, HostLocalSize int64
	PTPVersion                          string
	PTPChoice                           string

	CNI     []cniRun
	Exec    execResult
	Prog    []progBench
	ProgC   string
	ProgErr string

	NativeErr string

	NativeFloor, NativeCost float64

	Scenarios []*scenario
	// BigTCP compares Axon with --big-tcp against the kernel's defaults
	// and against plain routing given the same GSO sizes.
	BigTCP   []*streamScenario
	Counters []counterDelta
}

// counterDelta is how much an eBPF counter of a node grew during a scenario.
type counterDelta struct {
	Scenario, Node, Counter string
	Delta                   uint64
}

func requireTool(t *testing.T, name, hint string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found (%s)", name, hint)
	}
}

func findPlugins(t *testing.T) (ptp, hostLocal string) {
	t.Helper()
	const hint = "GOBIN=$PWD/.bin GOWORK=off go install github.com/containernetworking/plugins/plugins/main/ptp@v1.10.0 github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0"
	for _, name := range []string{"ptp", "host-local"} {
		var p string
		if *pluginDir != "" {
			p = filepath.Join(*pluginDir, name)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s: %v (install with: %s)", p, err, hint)
			}
		} else {
			var err error
			if p, err = exec.LookPath(name); err != nil {
				t.Fatalf("%s not in PATH; pass -dp.plugins or install with: %s", name, hint)
			}
		}
		if name == "ptp" {
			ptp = p
		} else {
			hostLocal = p
		}
	}
	if filepath.Dir(ptp) != filepath.Dir(hostLocal) {
		t.Fatalf("ptp (%s) and host-local (%s) must share a directory: it is the CNI_PATH", ptp, hostLocal)
	}
	return ptp, hostLocal
}

// TestDatapathBenchReport runs the whole benchmark and writes the report.
func TestDatapathBenchReport(t *testing.T) {
	if *reportPath == "" {
		t.Skip("benchmark report: run with -args -dp.report=PATH (see doc.go)")
	}
	testenv.RequireRoot(t)
	ptpBin, hostLocalBin := findPlugins(t)
	requireTool(t, "iperf3", "apt-get install -y iperf3")
	requireTool(t, "nsenter", "util-linux")
	requireTool(t, "ping", "iputils-ping")
	ps := &procs{}
	t.Cleanup(func() {
		ps.killAll()
		closeAllNS()
	})
	ctx := t.Context()

	res := &results{Start: time.Now(), Machine: describeMachine(), Root: repoRoot(t), LoadStart: loadAvg()}
	bins := t.TempDir()
	buildBinaries(t, res.Root, bins)
	axonCNI := filepath.Join(bins, "axon-cni")
	res.AxonCNISize, res.PTPSize, res.HostLocalSize = fileSize(axonCNI), fileSize(ptpBin), fileSize(hostLocalBin)
	res.PTPVersion = moduleVersion(ptpBin)

	// Per-packet cost first, on a quiet machine.
	t.Log("BPF_PROG_TEST_RUN benchmarks")
	// A failure here (say, bpf/datapath's tests do not build) is reported
	// and fails the test at the end, but does not stop the other parts.
	var err error
	if res.Prog, res.ProgC, err = runProgBenchmarks(res.Root, *progCount); err != nil {
		res.ProgErr = err.Error()
		t.Errorf("BPF_PROG_TEST_RUN benchmarks: %v", err)
	}
	if res.NativeFloor, res.NativeCost, err = nativePathCost(5); err != nil {
		res.NativeErr = err.Error()
		t.Errorf("native path test run: %v", err)
	}

	// Tunnel-mode cluster: CNI latency, same-node and tunnel traffic.
	t.Log("Axon in tunnel mode: CNI latency")
	ct := startCluster(t, bins, "tunnel", "t", 2)
	axon, err := newTarget("axon-cni", []string{bins}, t.TempDir(), map[string]any{
		"cniVersion": "1.1.0", "name": "axon",
		"plugins": []map[string]any{{"type": "axon-cni", "socket": ct.Nodes[0].DatapathSocket}},
	}, ct.Nodes[0].Netns)
	if err != nil {
		t.Fatal(err)
	}
	// ptp's host side goes into the namespace it runs in: a fresh
	// namespace of its own plays its node (the runtime's libcni runs there).
	ptpNode, err := newNS()
	if err != nil {
		t.Fatal(err)
	}
	res.PTPChoice = "a fresh dedicated network namespace as ptp's node: libcni runs on goroutines whose OS threads are locked in it, so ptp (forked from them) creates its host-side veths there"
	ptp, err := newTarget("ptp+host-local", []string{filepath.Dir(ptpBin)}, t.TempDir(), map[string]any{
		"cniVersion": "1.1.0", "name": "ptp-bench",
		"plugins": []map[string]any{{"type": "ptp", "ipMasq": false, "ipam": map[string]any{
			"type": "host-local", "ranges": [][]map[string]any{{{"subnet": "10.99.0.0/16"}}}, "dataDir": t.TempDir(),
		}}},
	}, ptpNode.path)
	if err != nil {
		t.Fatal(err)
	}
	// Sequential calls alternate between the plugins call by call; the
	// concurrent phases run one plugin after the other, in alternating
	// order.
	targets := []*cniTarget{axon, ptp}
	if _, err := measureCNISequential(ctx, targets, "warm-up", 3); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	seq, err := measureCNISequential(ctx, targets, "sequential", *seqPods)
	if err != nil {
		t.Fatalf("sequential: %v", err)
	}
	res.CNI = append(res.CNI, seq...)
	for _, ph := range []struct {
		name      string
		pods, con int
		order     []*cniTarget
	}{
		{"parallel", *parPods, *parConc, []*cniTarget{axon, ptp}},
		{"burst", *burstPods, *burstPods, []*cniTarget{ptp, axon}},
	} {
		var runs [2]cniRun
		for _, tg := range ph.order {
			r, err := measureCNI(ctx, tg, ph.name, ph.pods, ph.con)
			if err != nil {
				t.Fatalf("%s %s: %v", tg.Name, ph.name, err)
			}
			if tg == axon {
				runs[0] = r
			} else {
				runs[1] = r
			}
		}
		res.CNI = append(res.CNI, runs[:]...)
	}
	t.Log("exec-to-result")
	if res.Exec, err = measureExec(ctx, axonCNI, ptpBin, ct.Nodes[0].DatapathSocket, ct.Nodes[0].Netns,
		ipamTarget(ct), ct.Nodes[0].Name, *execRuns); err != nil {
		t.Fatal(err)
	}
	axon.closePods()
	ptp.closePods()
	ptpNode.close()
	time.Sleep(2 * time.Second) // let the kernel finish tearing the namespaces down

	t.Log("Axon in tunnel mode: traffic")
	tunnelPods := wireTrafficPods(t, ct, bins, []int{0, 0, 1})
	tunnelMTU, err := linkMTU(tunnelPods[0].ns.path, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	local, err := plainLocal(tunnelMTU, 0)
	if err != nil {
		t.Fatal(err)
	}
	crossT, err := newPlainCross(1500, tunnelMTU, 0)
	if err != nil {
		t.Fatal(err)
	}
	same := &scenario{
		Name: "same node", Axon: "tunnel-mode node: tc filter on the host veth, redirect_peer", Plain: "kernel routing between veths (/32 routes, static neighbours)",
		axon:    endpointPair{ClientNS: tunnelPods[0].ns.path, ServerNS: tunnelPods[1].ns.path, ServerIP: tunnelPods[1].ip},
		plain:   local,
		AxonMTU: tunnelMTU, PlainMTU: tunnelMTU,
	}
	tunnel := &scenario{
		Name: "across nodes, tunnel", Axon: "tunnel mode: VXLAN built by axon_from_pod (redirect_neigh to the underlay), stripped by axon_from_underlay (redirect_peer)", Plain: "kernel VXLAN device (point to point, UDP 8472) with static routes",
		axon:    endpointPair{ClientNS: tunnelPods[0].ns.path, ServerNS: tunnelPods[2].ns.path, ServerIP: tunnelPods[2].ip},
		plain:   crossT.VXLAN,
		AxonMTU: tunnelMTU, PlainMTU: tunnelMTU,
	}
	for _, s := range []*scenario{same, tunnel} {
		checkReach(t, s)
		res.Counters = append(res.Counters, runCounted(t, ct, ps, s)...)
		res.Scenarios = append(res.Scenarios, s)
	}
	ct.Stop()

	t.Log("Axon in native mode: traffic")
	cn := startCluster(t, bins, "native", "n", 2)
	nativePods := wireTrafficPods(t, cn, bins, []int{0, 1})
	nativeMTU, err := linkMTU(nativePods[0].ns.path, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	crossN, err := newPlainCross(nativeMTU, tunnelMTU, 0)
	if err != nil {
		t.Fatal(err)
	}
	native := &scenario{
		Name: "across nodes, native", Axon: "native mode: bpf_fib_lookup + redirect_neigh to the underlay, axon_from_underlay delivers (redirect_peer)", Plain: "kernel routing (pod block via the peer's underlay IP)",
		axon:    endpointPair{ClientNS: nativePods[0].ns.path, ServerNS: nativePods[1].ns.path, ServerIP: nativePods[1].ip},
		plain:   crossN.Native,
		AxonMTU: nativeMTU, PlainMTU: nativeMTU,
	}
	checkReach(t, native)
	res.Counters = append(res.Counters, runCounted(t, cn, ps, native)...)
	res.Scenarios = append(res.Scenarios, native)
	cn.Stop()

	// BIG TCP: the same paths on nodes started with --big-tcp, against the
	// kernel's defaults (the baselines above) and against the same
	// baselines given the same GSO sizes.
	t.Log("Axon with --big-tcp: traffic")
	localBig, err := plainLocal(tunnelMTU, bigGSO)
	if err != nil {
		t.Fatal(err)
	}
	crossBig, err := newPlainCross(nativeMTU, tunnelMTU, bigGSO)
	if err != nil {
		t.Fatal(err)
	}
	ctb := startCluster(t, bins, "tunnel", "tb", 2, "--big-tcp")
	bigPods := wireTrafficPods(t, ctb, bins, []int{0, 0, 1})
	bigScenarios := []*streamScenario{
		{Name: "same node", MTU: tunnelMTU, Variants: []*streamVariant{
			{Label: labelAxonBig, pair: endpointPair{ClientNS: bigPods[0].ns.path, ServerNS: bigPods[1].ns.path, ServerIP: bigPods[1].ip}},
			{Label: labelPlain, pair: local}, {Label: labelPlainBig, pair: localBig},
		}},
		{Name: "across nodes, tunnel", MTU: tunnelMTU, Variants: []*streamVariant{
			{Label: labelAxonBig, pair: endpointPair{ClientNS: bigPods[0].ns.path, ServerNS: bigPods[2].ns.path, ServerIP: bigPods[2].ip}},
			{Label: labelPlain, pair: crossT.VXLAN}, {Label: labelPlainBig, pair: crossBig.VXLAN},
		}},
	}
	for _, s := range bigScenarios {
		checkStreamReach(t, s)
		res.Counters = append(res.Counters, counted(t, ctb, s.Name+", BIG TCP", func() error { return runStreams(ps, s, *rounds, *streamDur) })...)
	}
	ctb.Stop()
	cnb := startCluster(t, bins, "native", "nb", 2, "--big-tcp")
	bigNative := wireTrafficPods(t, cnb, bins, []int{0, 1})
	nb := &streamScenario{Name: "across nodes, native", MTU: nativeMTU, Variants: []*streamVariant{
		{Label: labelAxonBig, pair: endpointPair{ClientNS: bigNative[0].ns.path, ServerNS: bigNative[1].ns.path, ServerIP: bigNative[1].ip}},
		{Label: labelPlain, pair: crossN.Native}, {Label: labelPlainBig, pair: crossBig.Native},
	}}
	checkStreamReach(t, nb)
	res.Counters = append(res.Counters, counted(t, cnb, nb.Name+", BIG TCP", func() error { return runStreams(ps, nb, *rounds, *streamDur) })...)
	res.BigTCP = append(bigScenarios, nb)
	cnb.Stop()

	res.End = time.Now()
	res.LoadEnd = loadAvg()
	if err := writeReport(*reportPath, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s", *reportPath)
}

// ipamTarget is axon-ipam's unix socket: the path the node agents take (its
// TCP API takes only mTLS).
func ipamTarget(c *cluster) string { return "unix://" + c.IPAMSocket() }

// wireTrafficPods wires one pod per entry of nodes (a node index) through
// axon-cni.
func wireTrafficPods(t *testing.T, c *cluster, bins string, nodes []int) []*cniPod {
	t.Helper()
	var pods []*cniPod
	for i, node := range nodes {
		tg, err := newTarget("traffic", []string{bins}, t.TempDir(), map[string]any{
			"cniVersion": "1.1.0", "name": "axon",
			"plugins": []map[string]any{{"type": "axon-cni", "socket": c.Nodes[node].DatapathSocket}},
		}, c.Nodes[node].Netns)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := tg.newPods(fmt.Sprintf("%s-%d", c.mode, i), 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := inNS(tg.nodeNS, func() error { return tg.add(t.Context(), ps[0]) }); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, ps[0])
	}
	return pods
}

// checkReach waits until both sides of a scenario reach their server.
func checkReach(t *testing.T, s *scenario) {
	t.Helper()
	for _, p := range []endpointPair{s.axon, s.plain} {
		testpoll.Until(t, 10*time.Second, func() error {
			if err := ping(p.ClientNS, p.ServerIP); err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			return nil
		})
	}
}

func checkStreamReach(t *testing.T, s *streamScenario) {
	t.Helper()
	for _, v := range s.Variants {
		testpoll.Until(t, 10*time.Second, func() error {
			if err := ping(v.pair.ClientNS, v.pair.ServerIP); err != nil {
				return fmt.Errorf("%s, %s: %w", s.Name, v.Label, err)
			}
			return nil
		})
	}
}

// runCounted runs a scenario and returns how the Axon nodes' forwarding
// counters grew meanwhile.
func runCounted(t *testing.T, c *cluster, ps *procs, s *scenario) []counterDelta {
	t.Helper()
	return counted(t, c, s.Name, func() error { return runScenario(ps, s, *rounds, *streamDur, *rrDur) })
}

// counted runs fn and returns how the Axon nodes' forwarding counters grew
// meanwhile, under the scenario name.
func counted(t *testing.T, c *cluster, name string, fn func() error) []counterDelta {
	t.Helper()
	before := make([]map[string]uint64, len(c.Nodes))
	for i := range c.Nodes {
		m, err := c.stats(i)
		if err != nil {
			t.Fatalf("node %d counters: %v", i, err)
		}
		before[i] = m
	}
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	var out []counterDelta
	for i := range c.Nodes {
		after, err := c.stats(i)
		if err != nil {
			t.Fatalf("node %d counters: %v", i, err)
		}
		for k, v := range after {
			if d := v - before[i][k]; d > 0 {
				out = append(out, counterDelta{Scenario: name, Node: c.Nodes[i].Name, Counter: k, Delta: d})
			}
		}
	}
	return out
}
