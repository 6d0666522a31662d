package bench

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/etcdtest"
)

var (
	reportPath = flag.String("ipam.report", "", "write the IPAM benchmark report (Markdown) to this `path`; the benchmark runs only when set")
	hostLocal  = flag.String("ipam.hostlocal", "", "`path` of the CNI host-local IPAM plugin binary (containernetworking/plugins v1.10.0); empty: skip host-local")
	duration   = flag.Duration("ipam.duration", 5*time.Second, "measured period of each backend at each concurrency")
	warmup     = flag.Duration("ipam.warmup", time.Second, "warm-up before each measured period (not counted)")
	scale      = flag.Bool("ipam.scale", false, "include the scale run (5,000 nodes × 30 pods)")
	noFsync    = flag.Bool("ipam.nofsync", false, "run etcd without fsync (a CPU-only ceiling; not how etcd runs in production)")
)

// A row is measured again (up to maxTries times) when other processes on
// the machine used at least this many cores during it. host-local's limit
// is higher: the kernel's work of creating and reaping its processes shows
// up outside any process.
const (
	quietLimit          = 0.25
	quietLimitHostLocal = 0.5
)

// concurrencies are the numbers of concurrent clients measured.
var concurrencies = []int{1, 16, 64}

// etcdSetup is one etcd the Axon and raw-CAS backends run on.
type etcdSetup struct {
	Name    string // "1 member" or "3 members"
	Members int
}

var setups = []etcdSetup{{"1 member", 1}, {"3 members", 3}}

// results is everything the report shows.
type results struct {
	Start, End  time.Time
	Duration    time.Duration
	Warmup      time.Duration
	HostLocal   string // binary used; "" when host-local was not run
	HostLocalV  string
	Axon        map[string][]measurement // by etcd setup name, in concurrency order
	AxonRot     map[string][]measurement // Axon with nodes of at most podsPerNode addresses
	AxonNode    map[string][]measurement // Axon with the clients as pods of one node, coalesced
	CAS         map[string][]measurement
	Bare        map[string][]measurement // gRPC + one CAS, no allocator (bareCAS)
	HL          []measurement
	Scale       *scaleResult
	Profiles    []*profileSummary
	Machine     machine
	ScaleWanted bool
	NoFsync     bool // etcd ran without fsync
}

func TestIPAMBenchReport(t *testing.T) {
	if *reportPath == "" {
		t.Skip("IPAM benchmark: not run without -ipam.report=PATH (use `make bench`, or see this package's doc)")
	}
	if *duration <= 0 || *warmup < 0 {
		t.Fatalf("-ipam.duration must be positive and -ipam.warmup non-negative")
	}
	report, err := filepath.Abs(*reportPath)
	if err != nil {
		t.Fatal(err)
	}
	res := &results{Start: time.Now(), Duration: *duration, Warmup: *warmup, Machine: describeMachine(),
		Axon: map[string][]measurement{}, AxonRot: map[string][]measurement{}, AxonNode: map[string][]measurement{}, CAS: map[string][]measurement{}, Bare: map[string][]measurement{}, ScaleWanted: *scale, NoFsync: *noFsync}
	if *hostLocal != "" {
		bin, err := filepath.Abs(*hostLocal)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("-ipam.hostlocal: %v (build it with `make bench`)", err)
		}
		res.HostLocal = bin
		res.HostLocalV = hostLocalVersion(bin)
	}

	for _, s := range setups {
		t.Run(fmt.Sprintf("etcd-%d", s.Members), func(t *testing.T) {
			ctx := t.Context()
			var opts []etcdtest.Option
			if !*noFsync {
				opts = append(opts, etcdtest.Durable())
			}
			c := etcdtest.New(t, s.Members, opts...)
			casCli := c.Client(t)
			axon := startAxon(t, c)
			bare := startBareCAS(t, c)
			for _, conc := range concurrencies {
				m := quietest(quietLimit, func(try int) measurement {
					m := measureCAS(t, ctx, casCli, "raw CAS", fmt.Sprintf("c%d-%d", conc, try), conc, *warmup, *duration)
					logMeasurement(t, s.Name, m)
					return m
				})
				res.CAS[s.Name] = append(res.CAS[s.Name], m)
				m = quietest(quietLimit, func(try int) measurement {
					m := measureBareCAS(t, ctx, bare, fmt.Sprintf("b%d-%d", conc, try), conc, *warmup, *duration)
					logMeasurement(t, s.Name, m)
					return m
				})
				res.Bare[s.Name] = append(res.Bare[s.Name], m)
				m = quietest(quietLimit, func(try int) measurement {
					m := axon.measureAxon(t, ctx, "Axon", fmt.Sprintf("c%d-%d", conc, try), conc, *warmup, *duration)
					logMeasurement(t, s.Name, m)
					return m
				})
				res.Axon[s.Name] = append(res.Axon[s.Name], m)
				m = quietest(quietLimit, func(try int) measurement {
					m := axon.measureAxonRotating(t, ctx, "Axon (110 pods/node)", fmt.Sprintf("r%d-%d", conc, try), conc, *warmup, *duration)
					logMeasurement(t, s.Name, m)
					return m
				})
				res.AxonRot[s.Name] = append(res.AxonRot[s.Name], m)
				m = quietest(quietLimit, func(try int) measurement {
					m := axon.measureAxonOneNode(t, ctx, "Axon (pods of one node)", fmt.Sprintf("o%d-%d", conc, try), conc, *warmup, *duration)
					logMeasurement(t, s.Name, m)
					return m
				})
				res.AxonNode[s.Name] = append(res.AxonNode[s.Name], m)
			}
			if s.Members == 1 {
				res.Profiles = append(res.Profiles, profileAxon(t, ctx, axon,
					fmt.Sprintf("1 member, %d clients, after the rows above", profileConc), "prof"))
			}
		})
	}
	if res.HostLocal != "" {
		t.Run("host-local", func(t *testing.T) {
			for _, conc := range concurrencies {
				m := quietest(quietLimitHostLocal, func(int) measurement {
					m := measureHostLocal(t, t.Context(), res.HostLocal, conc, *warmup, *duration)
					logMeasurement(t, "-", m)
					return m
				})
				res.HL = append(res.HL, m)
			}
		})
	}
	if *scale {
		t.Run("scale", func(t *testing.T) {
			r := runScale(t)
			res.Scale = &r
			if r.Profile != nil {
				res.Profiles = append(res.Profiles, r.Profile)
			}
		})
	}
	res.End = time.Now()

	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(report, []byte(renderReport(res)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s (%v)", report, res.End.Sub(res.Start).Round(time.Second))
}

func logMeasurement(t *testing.T, etcd string, m measurement) {
	t.Logf("%-20s %-9s c=%-3d %9.0f ops/s  p50 %-9v p99 %-9v errors %d  cpu %.2f cores (others %.2f)  etcd req/op %.2f",
		m.Backend, etcd, m.Conc, m.rate(), m.P50.Round(time.Microsecond), m.P99.Round(time.Microsecond), m.Errors,
		m.CPU.Seconds()/m.Elapsed.Seconds(), m.Others.Seconds()/m.Elapsed.Seconds(), perOp(m.KV.RoundTrips(), m.Ops))
	if m.FirstEr != "" {
		t.Logf("  first error: %s", m.FirstEr)
	}
}

func perOp(n int64, ops int) float64 {
	if ops == 0 {
		return 0
	}
	return float64(n) / float64(ops)
}
