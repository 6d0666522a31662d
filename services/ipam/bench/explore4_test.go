package bench

import (
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/etcdtest"
)

func TestExploreC1Prof(t *testing.T) {
	out := os.Getenv("EXPLORE_C1PROF")
	if out == "" {
		t.Skip()
	}
	ctx := t.Context()
	c := etcdtest.New(t, 1)
	e := startAxon(t, c)
	f, _ := os.Create(out)
	pprof.StartCPUProfile(f)
	logMeasurement(t, "", e.measureAxon(t, ctx, "Axon", "p", 1, time.Second, 5*time.Second))
	pprof.StopCPUProfile()
	f.Close()
	blocks := e.alloc
	_ = blocks
}
