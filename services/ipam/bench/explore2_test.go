package bench

import (
	"os"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/etcdtest"
)

func TestExploreProfile(t *testing.T) {
	out := os.Getenv("EXPLORE_PROF")
	if out == "" {
		t.Skip()
	}
	members, _ := strconv.Atoi(os.Getenv("EXPLORE_MEMBERS"))
	ctx := t.Context()
	c := etcdtest.New(t, members)
	e := startAxon(t, c)
	casCli := c.Client(t)
	logMeasurement(t, "", measureCAS(t, ctx, casCli, "rawCAS", "p", 64, time.Second, 3*time.Second))
	f, _ := os.Create(out + ".cas")
	pprof.StartCPUProfile(f)
	logMeasurement(t, "", measureCAS(t, ctx, casCli, "rawCAS", "p2", 64, 0, 4*time.Second))
	pprof.StopCPUProfile()
	f.Close()
	logMeasurement(t, "", e.measureAxon(t, ctx, "Axon", "warm", 64, time.Second, 2*time.Second))
	f, _ = os.Create(out + ".axon")
	pprof.StartCPUProfile(f)
	logMeasurement(t, "", e.measureAxon(t, ctx, "Axon", "p", 64, time.Second, 4*time.Second))
	pprof.StopCPUProfile()
	f.Close()
}
