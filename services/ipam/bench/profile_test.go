package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/axon-cni/axon/services/ipam/allocator"
)

// profileConc and profileDur shape the profiled Axon runs.
const (
	profileConc = 64
	profileDur  = 3 * time.Second
)

// profileFunc is one function of a CPU profile with its cumulative share.
type profileFunc struct {
	Name string
	Cum  float64 // percent of all samples
}

// profileSummary is what the report shows of one CPU profile.
type profileSummary struct {
	Title   string
	Blocks  int64 // blocks claimed in the cluster while profiling
	Rate    float64
	Samples string // pprof's "Total samples" line
	Funcs   []profileFunc
	Err     string // why there is no profile
}

// share returns the cumulative percentage of the first function whose name
// contains every part, or 0.
func (s *profileSummary) share(parts ...string) float64 {
	if s == nil {
		return 0
	}
next:
	for _, f := range s.Funcs {
		for _, p := range parts {
			if !strings.Contains(f.Name, p) {
				continue next
			}
		}
		return f.Cum
	}
	return 0
}

// profileAxon runs AllocateIP over gRPC with profileConc clients on fresh
// nodes for profileDur under the CPU profiler and summarizes the profile
// with `go tool pprof`.
func profileAxon(t testing.TB, ctx context.Context, e *axonEnv, title, id string) *profileSummary {
	t.Helper()
	s := &profileSummary{Title: title}
	if resp, err := e.cli.Get(ctx, allocator.DefaultConfig().Root+"topology/blocks/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		s.Blocks = resp.Count
	}
	if err := e.registerNodes(ctx, id, profileConc, 16); err != nil {
		t.Fatal(err)
	}
	cls := e.clients(t, profileConc)
	file := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		s.Err = fmt.Sprintf("could not start the CPU profiler (%v); is -test.cpuprofile set?", err)
		return s
	}
	m := run(ctx, "Axon (profiled)", profileConc, 500*time.Millisecond, profileDur, e.kv, func(ctx context.Context, w, i int) error {
		_, err := cls[w].AllocateIP(ctx, allocRequest(id, nodeName(id, w), w, i))
		return err
	})
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s.Rate = m.rate()
	s.Samples, s.Funcs, err = topFuncs(file)
	if err != nil {
		s.Err = err.Error()
	}
	return s
}

// topFuncs runs `go tool pprof -top -cum` on a profile and returns its
// total-samples line and the IPAM functions (packages under
// services/ipam) it lists, by cumulative share.
func topFuncs(file string) (string, []profileFunc, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"tool", "pprof", "-top", "-cum", "-nodecount=400"}
	if bin, err := os.Executable(); err == nil {
		args = append(args, bin)
	}
	cmd := exec.Command(goBin, append(args, file)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", nil, fmt.Errorf("go tool pprof: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var total string
	var funcs []profileFunc
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Duration:") {
			total = strings.TrimSpace(line)
			continue
		}
		// flat flat% sum% cum cum% name
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		name := strings.Join(f[5:], " ")
		// The IPAM packages, not this benchmark's load generator.
		if !strings.Contains(name, "/services/ipam/") || strings.Contains(name, "/services/ipam/bench.") {
			continue
		}
		cum, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err != nil {
			continue
		}
		funcs = append(funcs, profileFunc{Name: strings.TrimPrefix(name, "github.com/axon-cni/axon/services/ipam/"), Cum: cum})
	}
	if len(funcs) == 0 {
		return total, nil, fmt.Errorf("go tool pprof listed no IPAM function")
	}
	return total, funcs, nil
}
