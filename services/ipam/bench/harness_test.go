package bench

import (
	"context"
	"slices"
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
	cpu time.Duration // user+system CPU of this process and its waited-for children
	kv  kvCounts
}

// measurement is what one backend did at one concurrency.
type measurement struct {
	Backend string
	Conc    int
	Ops     int           // operations completed inside the measured period
	Errors  int           // failed operations inside the measured period
	FirstEr string        // the first error, if any (warm-up included)
	Elapsed time.Duration // length of the measured period
	P50     time.Duration
	P99     time.Duration
	Max     time.Duration
	CPU     time.Duration // CPU used by the process (and children) in the period
	KV      kvCounts      // etcd requests in the period (Axon only)
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

// run runs conc workers calling do in a closed loop for warm+dur. Only
// operations that both start and end inside the measured period (after the
// warm-up) count towards the rate and the latencies. kv, if not nil, is
// sampled at the period's start and end.
func run(ctx context.Context, backend string, conc int, warm, dur time.Duration, kv *countingKV, do op) measurement {
	start := time.Now()
	mStart := start.Add(warm)
	mEnd := mStart.Add(dur)
	sample := func() counters {
		c := counters{cpu: cpuNow()}
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
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	for w := range conc {
		wg.Go(func() {
			var mine []time.Duration
			nerr := 0
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
			mu.Unlock()
		})
	}
	wg.Wait()
	sampler.Wait()

	m := measurement{Backend: backend, Conc: conc, Ops: len(lats), Errors: errs, Elapsed: dur,
		CPU: after.cpu - before.cpu, KV: after.kv.sub(before.kv)}
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
