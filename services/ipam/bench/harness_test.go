package bench

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// op performs one operation of worker w; i counts that worker's operations
// from 0 (warm-up included), so i is unique per worker.
type op func(ctx context.Context, w, i int) error

// counters are sampled at the start and end of the measured period.
type counters struct {
	cpu    time.Duration // user+system CPU of this process and its waited-for children
	sysCPU time.Duration // busy CPU time of the whole machine
	kv     kvCounts
}

// measurement is what one backend did at one concurrency.
type measurement struct {
	Backend string
	Conc    int
	Ops     int           // operations completed inside the measured period
	Total   int           // successful operations, warm-up included
	Errors  int           // failed operations inside the measured period
	FirstEr string        // the first error, if any (warm-up included)
	Elapsed time.Duration // length of the measured period
	P50     time.Duration
	P99     time.Duration
	Max     time.Duration
	CPU     time.Duration // CPU used by the process (and children) in the period
	Others  time.Duration // CPU used by everything else on the machine in the period
	KV      kvCounts      // etcd requests in the period (Axon only)
	Tries   int           // how often the row was measured (see quietest)
}

// othersCores is the CPU other processes used during the period, in cores.
func (m measurement) othersCores() float64 { return m.Others.Seconds() / m.Elapsed.Seconds() }

// maxTries bounds how often a row disturbed by other processes is measured.
const maxTries = 3

// quietest measures a row until other processes used less than limit
// cores during its period, at most maxTries times, and keeps the attempt
// with the least disturbance. measure gets the attempt number, to use fresh
// keys or nodes.
func quietest(limit float64, measure func(attempt int) measurement) measurement {
	var best measurement
	for attempt := range maxTries {
		m := measure(attempt)
		if attempt == 0 || m.othersCores() < best.othersCores() {
			best = m
		}
		best.Tries = attempt + 1
		if m.othersCores() < limit {
			break
		}
	}
	return best
}

func (m measurement) rate() float64 { return float64(m.Ops) / m.Elapsed.Seconds() }

// cpuNow returns the CPU time used so far by this process and its
// terminated, waited-for children (the host-local executions).
func cpuNow() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// clockTick is USER_HZ, the unit of /proc/stat; 100 on every Linux
// architecture Go supports.
const clockTick = 100

// machineBusy returns the CPU time the whole machine has spent busy (not
// idle nor waiting for I/O) since boot, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick
}

// run runs conc workers calling do in a closed loop for warm+dur. Only
// operations that both start and end inside the measured period (after the
// warm-up) count towards the rate and the latencies. kv, if not nil, is
// sampled at the period's start and end.
func run(ctx context.Context, backend string, conc int, warm, dur time.Duration, kv *countingKV, do op) measurement {
	start := time.Now()
	mStart := start.Add(warm)
	mEnd := mStart.Add(dur)
	sample := func() counters {
		c := counters{cpu: cpuNow(), sysCPU: machineBusy()}
		if kv != nil {
			c.kv = kv.snapshot()
		}
		return c
	}
	var before, after counters
	var sampler sync.WaitGroup
	sampler.Go(func() {
		time.Sleep(time.Until(mStart))
		before = sample()
		time.Sleep(time.Until(mEnd))
		after = sample()
	})

	var (
		mu       sync.Mutex
		lats     []time.Duration
		errs     int
		total    int
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	for w := range conc {
		wg.Go(func() {
			var mine []time.Duration
			nerr, ok := 0, 0
			for i := 0; ; i++ {
				t0 := time.Now()
				if !t0.Before(mEnd) || ctx.Err() != nil {
					break
				}
				err := do(ctx, w, i)
				t1 := time.Now()
				if err != nil {
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
				} else {
					ok++
				}
				if t0.Before(mStart) || t1.After(mEnd) {
					continue
				}
				if err != nil {
					nerr++
					continue
				}
				mine = append(mine, t1.Sub(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += nerr
			total += ok
			mu.Unlock()
		})
	}
	wg.Wait()
	sampler.Wait()

	m := measurement{Backend: backend, Conc: conc, Ops: len(lats), Total: total, Errors: errs, Elapsed: dur,
		CPU: after.cpu - before.cpu, KV: after.kv.sub(before.kv)}
	m.Others = max(0, after.sysCPU-before.sysCPU-m.CPU)
	if p := firstErr.Load(); p != nil {
		m.FirstEr = *p
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		m.P50 = percentile(lats, 0.50)
		m.P99 = percentile(lats, 0.99)
		m.Max = lats[len(lats)-1]
	}
	return m
}

// percentile returns the nearest-rank percentile q of sorted samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	idx := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(idx, 0), len(sorted)-1)]
}
