package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
)

func TestExplore(t *testing.T) {
	if os.Getenv("EXPLORE") == "" {
		t.Skip()
	}
	members := 3
	if os.Getenv("EXPLORE") == "1" {
		members = 1
	}
	ctx := t.Context()
	c := etcdtest.New(t, members)
	e := startAxon(t, c)
	casCli := c.Client(t)
	warm, dur := 500*time.Millisecond, 2*time.Second
	for _, conc := range []int{16, 64} {
		logMeasurement(t, "", measureCAS(t, ctx, casCli, "rawCAS", fmt.Sprintf("x%d", conc), conc, warm, dur))
		val := strings.Repeat("v", 256)
		logMeasurement(t, "", run(ctx, "CAS+Get", conc, warm, dur, nil, func(ctx context.Context, w, i int) error {
			if _, err := casCli.Get(ctx, "/bench/pools/", clientv3.WithPrefix()); err != nil {
				return err
			}
			_, err := casCli.Put(ctx, fmt.Sprintf("/bench/y/%d/%d", conc, w), val)
			return err
		}))
		id := fmt.Sprintf("g%d", conc)
		logMeasurement(t, "", e.measureAxon(t, ctx, "AxonDefault", id, conc, warm, dur))
		id = fmt.Sprintf("v4%d", conc)
		if err := e.registerNodes(ctx, id, conc, 16); err != nil {
			t.Fatal(err)
		}
		cls := e.clients(t, conc)
		logMeasurement(t, "", run(ctx, "AxonV4gRPC", conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
			req := allocRequest(id, nodeName(id, w), w, i)
			req.Families = []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV4}
			_, err := cls[w].AllocateIP(ctx, req)
			return err
		}))
		id = fmt.Sprintf("d%d", conc)
		if err := e.registerNodes(ctx, id, conc, 16); err != nil {
			t.Fatal(err)
		}
		logMeasurement(t, "", run(ctx, "AxonV4direct", conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
			req := allocRequest(id, nodeName(id, w), w, i)
			req.Families = []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV4}
			_, err := e.alloc.AllocateIP(ctx, req)
			return err
		}))
	}
}
