package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
)

var (
	svcReportPath = flag.String("svc.report", "", "write the service benchmark report (Markdown) to this `path`; the benchmark runs only when set")
	svcSizes      = flag.String("svc.sizes", "0,1000,10000,100000", "comma-separated numbers of services to measure at")
	svcImpls      = flag.String("svc.impls", strings.Join(allSvcImpls, ","), "comma-separated implementations to measure")
	svcSamples    = flag.Int("svc.samples", 1000, "sequential connections per latency run (after 50 warm-up ones)")
	svcWorkers    = flag.Int("svc.workers", 4, "parallel workers of the connections/s runs")
	svcRateDur    = flag.Duration("svc.rate", 2*time.Second, "duration of each connections/s run")
	svcRounds     = flag.Int("svc.rounds", 3, "rounds of latency and connections/s per size, implementations in rotating order (the median is reported)")
	svcProgLimit  = flag.Duration("svc.proglimit", 3*time.Minute, "longest an implementation may take to program one size, or to add one service to it: past it, or when its growth over the smaller sizes predicts more, the size is reported as too slow")
)

// The implementations, as -svc.impls names them.
const (
	implBaseline = "baseline"
	implAxonBase = "axon-direct"
	implLegacy   = "iptables-legacy"
	implIPTNft   = "iptables-nft"
	implNft      = "nftables"
	implAxon     = "axon"
)

var allSvcImpls = []string{implBaseline, implLegacy, implIPTNft, implNft, implAxonBase, implAxon}

// errTooSlow is an implementation's programming stopped at
// -svc.proglimit: reported, not a failure.
var errTooSlow = errors.New("too slow")

// svcWarmup is how many connections each latency run makes before it
// counts.
const svcWarmup = 50

// svcRow is one implementation at one size.
type svcRow struct {
	Impl, Label string
	Size        int // services in the table: max(Size, 1)
	// Err says why there are no numbers (not available, failed, too slow).
	Err string
	// Slow says programming this size took, or would take, longer than
	// -svc.proglimit: a result, not a failure.
	Slow bool
	// AddOneErr says adding one more took longer than -svc.proglimit (the
	// rest of the row is measured).
	AddOneErr       string
	Program, AddOne time.Duration
	Lat             []latencies // one per round
	Rate            []float64   // connections/s, one per round
	Mem             memUsage
	LookupNs        float64
	LookupErr       string
}

// lat is the round with the median p50.
func (r *svcRow) lat() latencies {
	if len(r.Lat) == 0 {
		return latencies{}
	}
	ls := slices.Clone(r.Lat)
	slices.SortFunc(ls, func(a, b latencies) int { return int(a.P50 - b.P50) })
	return ls[len(ls)/2]
}

func (r *svcRow) rate() float64 { return medianF(r.Rate) }

func (r *svcRow) ok() bool { return r.Err == "" }

// svcResults is everything the service report shows.
type svcResults struct {
	Start, End         time.Time
	LoadStart, LoadEnd string
	Machine            machine
	Sizes              []int
	Rows               []*svcRow
	// SizeTime is how long each size took, all implementations together.
	SizeTime map[int]time.Duration
	// AxonSetup is how long building Axon and starting its node took.
	AxonSetup time.Duration
	Versions  map[string]string // tool -> version line
}

func (r *svcResults) row(impl string, size int) *svcRow {
	for _, x := range r.Rows {
		if x.Impl == impl && x.Size == size {
			return x
		}
	}
	return nil
}

// label is how the report names an implementation (as measured at any
// size), or its flag name.
func (r *svcResults) label(impl string) string {
	for _, x := range r.Rows {
		if x.Impl == impl && x.Label != "" {
			return x.Label
		}
	}
	return impl
}

// tooSlow says why impl is not even tried at size: its programming time
// at the two largest smaller sizes it was measured at, extrapolated with
// the power law they fit, exceeds limit (nftables' per-service anonymous
// sets grow quadratically). "" if it should be tried.
func (r *svcResults) tooSlow(impl string, size int, limit time.Duration) string {
	var done []*svcRow
	for _, x := range r.Rows {
		if x.Impl == impl && x.ok() && x.Size > 0 && x.Size < size && x.Program > 0 {
			done = append(done, x)
		}
	}
	if len(done) < 2 {
		return ""
	}
	slices.SortFunc(done, func(a, b *svcRow) int { return a.Size - b.Size })
	a, b := done[len(done)-2], done[len(done)-1]
	exp := math.Log(float64(b.Program)/float64(a.Program)) / math.Log(float64(b.Size)/float64(a.Size))
	exp = max(exp, 1) // never assume better than linear
	est := time.Duration(float64(b.Program) * math.Pow(float64(size)/float64(b.Size), exp))
	if est <= limit {
		return ""
	}
	return fmt.Sprintf("skipped: programming %d services would take about %s (%s at %d, %s at %d services: time grows as n^%.1f), over -svc.proglimit=%s",
		size, est.Round(time.Second), ms(a.Program), a.Size, ms(b.Program), b.Size, exp, limit)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-svc.sizes: %q is not a number of services", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseImpls(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(allSvcImpls, f) {
			return nil, fmt.Errorf("-svc.impls: unknown implementation %q (want some of %s)", f, strings.Join(allSvcImpls, ","))
		}
		out = append(out, f)
	}
	return out, nil
}

// svcRun is one implementation set up for one size.
type svcRun struct {
	impl  serviceImpl
	pods  *svcPods
	svcs  []svcSpec
	extra svcSpec
	row   *svcRow
	// close releases the run's own pods (the plain topologies); nil for
	// pods that outlive the size (Axon's).
	close func()
}

// measured is the service the client connects to: the last programmed.
func (r *svcRun) measured() netip.AddrPort { return r.impl.target(r.svcs[len(r.svcs)-1]) }

// TestServiceBenchReport compares service translation by kube-proxy-style
// iptables rulesets (legacy and nft backends), an nftables verdict-map
// ruleset and Axon's eBPF load balancer at growing numbers of services and
// writes the report.
func TestServiceBenchReport(t *testing.T) {
	if *svcReportPath == "" {
		t.Skip("service benchmark report: run with -args -svc.report=PATH (see doc.go)")
	}
	testenv.RequireRoot(t)
	sizes, err := parseSizes(*svcSizes)
	if err != nil {
		t.Fatal(err)
	}
	impls, err := parseImpls(*svcImpls)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []struct{ impl, bin, pkg string }{
		{implLegacy, "iptables-legacy-restore", "iptables"},
		{implIPTNft, "iptables-nft-restore", "iptables"},
		{implNft, "nft", "nftables"},
	} {
		if slices.Contains(impls, tool.impl) {
			requireTool(t, tool.bin, "apt-get install -y "+tool.pkg+", or scripts/setup.sh bench")
		}
	}
	t.Cleanup(closeAllNS)
	ctx := t.Context()
	res := &svcResults{Start: time.Now(), Machine: describeMachine(), LoadStart: loadAvg(), Sizes: sizes,
		SizeTime: map[int]time.Duration{}, Versions: toolVersions()}

	var axon *axonSetup
	if slices.Contains(impls, implAxon) || slices.Contains(impls, implAxonBase) {
		t0 := time.Now()
		axon = startAxonServices(t)
		res.AxonSetup = time.Since(t0)
	}

	for _, size := range sizes {
		t.Logf("%d services", size)
		t0 := time.Now()
		runs := setUpSize(ctx, t, res, impls, size, axon)
		measureSize(t, runs)
		for _, r := range runs {
			if r.close != nil {
				// The rules go with the namespaces: emptying 100k of them
				// first would take minutes.
				r.close()
				continue
			}
			if err := r.impl.teardown(ctx); err != nil {
				t.Errorf("%s: teardown: %v", r.row.Label, err)
			}
		}
		res.SizeTime[size] = time.Since(t0)
	}
	res.End = time.Now()
	res.LoadEnd = loadAvg()
	if err := writeServiceReport(*svcReportPath, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s", *svcReportPath)
}

// setUpSize builds and programs every implementation for one size. An
// implementation that fails (or is not available, or too slow) gets a row
// saying so and no run.
func setUpSize(ctx context.Context, t *testing.T, res *svcResults, impls []string, size int, axon *axonSetup) []*svcRun {
	t.Helper()
	var runs []*svcRun
	for _, name := range impls {
		row := &svcRow{Impl: name, Size: size}
		res.Rows = append(res.Rows, row)
		if why := res.tooSlow(name, size, *svcProgLimit); why != "" {
			row.Label, row.Err, row.Slow = res.label(name), why, true
			t.Logf("%s at %d services: %s", name, size, why)
			continue
		}
		run, err := setUpImpl(ctx, name, size, axon, row)
		if row.Label == "" {
			row.Label = name
		}
		if name == implAxon {
			var lerr error
			if row.LookupNs, lerr = axonLookupCost(size); lerr != nil {
				row.LookupErr = lerr.Error()
				t.Logf("axon lookup cost at %d services: %v", size, lerr)
			}
		}
		if err != nil && row.Err == "" {
			row.Err = err.Error()
		}
		row.Slow = errors.Is(err, errTooSlow)
		if row.Err != "" {
			if !errors.Is(err, errNotAvailable) && !row.Slow {
				t.Errorf("%s at %d services: %s", name, size, row.Err)
			}
			if run != nil && run.close != nil {
				run.close()
			}
			continue
		}
		runs = append(runs, run)
	}
	return runs
}

// setUpImpl programs one implementation: all services, then one more,
// and checks that both the measured and the added service answer.
func setUpImpl(ctx context.Context, name string, size int, axon *axonSetup, row *svcRow) (_ *svcRun, err error) {
	run := &svcRun{row: row}
	switch name {
	case implAxonBase:
		run.impl, run.pods = baselineImpl{label: "Axon, no services (backend direct)"}, axon.pods
	case implAxon:
		if axon.err != nil {
			row.Label, row.Err = labelAxon, axon.err.Error()
			return nil, axon.err
		}
		run.impl, run.pods = axon.impl, axon.pods
	default:
		srv := &servers{}
		pods, err := plainServicePods(srv)
		run.close = func() {
			srv.stop()
			if pods != nil {
				pods.closeAll()
			}
		}
		if err != nil {
			return run, fmt.Errorf("plain topology: %w", err)
		}
		run.pods = pods
		switch name {
		case implBaseline:
			run.impl = baselineImpl{label: "no services (backend direct)"}
		case implLegacy:
			run.impl = &iptablesImpl{label: "iptables-legacy (kube-proxy iptables)", restore: "iptables-legacy-restore", node: pods.node}
		case implIPTNft:
			run.impl = &iptablesImpl{label: "iptables-nft (kube-proxy iptables)", restore: "iptables-nft-restore", node: pods.node}
		case implNft:
			run.impl = &nftImpl{node: pods.node}
		}
	}
	row.Label = run.impl.name()
	run.svcs, run.extra = serviceSet(size, run.pods.Backends)
	// Each of the two calls has -svc.proglimit.
	timed := func(what string, fn func(context.Context) (time.Duration, error)) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, *svcProgLimit)
		defer cancel()
		d, err := fn(cctx)
		if err != nil && cctx.Err() != nil && ctx.Err() == nil {
			return 0, fmt.Errorf("%s took longer than -svc.proglimit=%s: %w", what, *svcProgLimit, errTooSlow)
		}
		return d, err
	}
	if row.Program, err = timed(fmt.Sprintf("programming %d services", len(run.svcs)), func(ctx context.Context) (time.Duration, error) {
		return run.impl.program(ctx, run.svcs)
	}); err != nil {
		return run, fmt.Errorf("program %d services: %w", len(run.svcs), err)
	}
	dsts := []netip.AddrPort{run.measured(), run.impl.target(run.extra)}
	if row.AddOne, err = timed("adding one more service", func(ctx context.Context) (time.Duration, error) {
		return run.impl.addOne(ctx, run.extra)
	}); err != nil {
		if !errors.Is(err, errTooSlow) {
			return run, fmt.Errorf("add one service: %w", err)
		}
		// The services programmed are still measured.
		row.AddOneErr, dsts = err.Error(), dsts[:1]
	}
	if row.Mem, err = run.impl.memory(ctx); err != nil {
		return run, fmt.Errorf("memory: %w", err)
	}
	for _, dst := range dsts {
		if err := pollConnect(ctx, run.pods.Client, dst); err != nil {
			return run, fmt.Errorf("service %s does not answer: %w", dst, err)
		}
	}
	return run, nil
}

// pollConnect waits until a connection to dst from the client succeeds.
func pollConnect(ctx context.Context, client string, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	for {
		if err = checkConnect(client, dst); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// measureSize runs the rounds of latency and connections/s, the
// implementations in an order that rotates from round to round.
func measureSize(t *testing.T, runs []*svcRun) {
	t.Helper()
	for r := range *svcRounds {
		for i := range runs {
			run := runs[(i+r)%len(runs)]
			if !run.row.ok() {
				continue
			}
			lat, err := connLatency(run.pods.Client, run.measured(), svcWarmup, *svcSamples)
			if err == nil {
				run.row.Lat = append(run.row.Lat, lat)
				var rate float64
				rate, err = connRate(run.pods.Client, run.measured(), *svcWorkers, *svcRateDur)
				run.row.Rate = append(run.row.Rate, rate)
			}
			if err != nil {
				run.row.Err = fmt.Sprintf("round %d: %v", r+1, err)
				t.Errorf("%s at %d services: %s", run.row.Label, run.row.Size, run.row.Err)
			}
		}
	}
}

// closeAll closes the plain topology's namespaces.
func (p *svcPods) closeAll() {
	for _, n := range p.owned {
		n.close()
	}
}

// axonSetup is a running one-node Axon cluster with a client pod and
// backend pods wired through axon-cni; err says why Axon is not measured.
type axonSetup struct {
	impl *axonImpl
	pods *svcPods
	err  error
}

// startAxonServices builds Axon, starts a one-node cluster, wires the pods
// and probes the service API with one service. When the API is not
// implemented in this build, the setup carries errNotAvailable and the
// report says so.
func startAxonServices(t *testing.T) *axonSetup {
	t.Helper()
	root := repoRoot(t)
	bins := t.TempDir()
	buildBinaries(t, root, bins)
	// Room for the largest size: 100k frontends, 3 backends each, and a
	// batch's new slots beside the old.
	c := startCluster(t, bins, "tunnel", "s", 1, "--bpf-service-map-max", "262144", "--bpf-slot-map-max", "1048576")
	pods := wireTrafficPods(t, c, bins, []int{0, 0, 0, 0})
	srv := &servers{}
	t.Cleanup(srv.stop)
	p := &svcPods{Client: pods[0].ns.path}
	for _, pod := range pods[1:] {
		ip, err := netip.ParseAddr(pod.ip)
		if err != nil {
			t.Fatalf("pod address %q: %v", pod.ip, err)
		}
		if err := srv.start(pod.ns.path, netip.AddrPortFrom(ip, backendPort)); err != nil {
			t.Fatal(err)
		}
		p.Backends = append(p.Backends, ip)
	}
	if err := pods[0].ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535"); err != nil {
		t.Fatal(err)
	}
	testpoll.Until(t, 10*time.Second, func() error {
		return checkConnect(p.Client, netip.AddrPortFrom(p.Backends[0], backendPort))
	})
	impl, err := newAxonImpl(c.Nodes[0].DatapathSocket, "/sys/fs/bpf/"+c.prefix+c.Nodes[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = impl.close() })
	probe, _ := serviceSet(0, p.Backends)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := impl.program(ctx, probe); err != nil {
		if !errors.Is(err, errNotAvailable) {
			t.Errorf("Axon: %v", err)
		}
		return &axonSetup{pods: p, err: err}
	}
	return &axonSetup{impl: impl, pods: p}
}
