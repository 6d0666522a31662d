package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
)

func TestExploreC1(t *testing.T) {
	if os.Getenv("EXPLORE_C1") == "" {
		t.Skip()
	}
	ctx := t.Context()
	c := etcdtest.New(t, 1)
	e := startAxon(t, c)
	casCli := c.Client(t)
	warm, dur := 500*time.Millisecond, 2*time.Second
	for _, conc := range []int{1, 64} {
		logMeasurement(t, "", measureCAS(t, ctx, casCli, "rawCAS", fmt.Sprintf("x%d", conc), conc, warm, dur))
		logMeasurement(t, "", run(ctx, "GetPools", conc, warm, dur, nil, func(ctx context.Context, w, i int) error {
			_, err := casCli.Get(ctx, "/axon/ipam/v1/pools/", clientv3.WithPrefix())
			return err
		}))
		for _, v := range []struct {
			name   string
			v4     bool
			direct bool
		}{{"default-grpc", false, false}, {"v4-grpc", true, false}, {"default-direct", false, true}, {"v4-direct", true, true}} {
			id := fmt.Sprintf("%s-%d", v.name, conc)
			if err := e.registerNodes(ctx, id, conc, 16); err != nil {
				t.Fatal(err)
			}
			cls := e.clients(t, conc)
			logMeasurement(t, "", run(ctx, v.name, conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
				req := allocRequest(id, nodeName(id, w), w, i)
				if v.v4 {
					req.Families = []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV4}
				}
				var err error
				if v.direct {
					_, err = e.alloc.AllocateIP(ctx, req)
				} else {
					_, err = cls[w].AllocateIP(ctx, req)
				}
				return err
			}))
		}
	}
}
