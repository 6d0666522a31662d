package agent_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/axon-cni/axon/bpf/testpoll"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/lb"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// TestStartRestoresServices checks that a restarted agent answers service
// calls only once Start has read the services back from the maps (first,
// so IPAM being down does not hold them), and then lists what the previous
// agent programmed; a failing read fails Start, leaving the node not ready.
func TestStartRestoresServices(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	first := w.agent(t)
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stored, err := first.Services().Upsert(t.Context(), &datapathv1alpha1.Service{
		Frontend: &datapathv1alpha1.Frontend{Address: "10.96.0.10", Port: 53, Protocol: commonv1alpha1.Protocol_PROTOCOL_UDP},
		Type:     datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
		Backends: []*datapathv1alpha1.Backend{{Address: "10.0.1.7", Port: 53, NodeName: node}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}

	failing := w.agent(t)
	w.bpf.FailOn(bpffake.OpServices, 1, unix.EIO)
	if err := failing.Start(t.Context()); !errors.Is(err, unix.EIO) || failing.Ready() == nil {
		t.Fatalf("Start with unreadable services = %v, ready %v; want the error, not ready", err, failing.Ready())
	}

	second := w.agent(t)
	if _, _, err := second.Services().List(lb.Query{Limit: 10}); !errors.Is(err, lb.ErrNotReady) {
		t.Errorf("List before Start = %v, want ErrNotReady", err)
	}
	// IPAM down: the node is not set up, but its services are restored.
	w.ipam.FailNext("GetNode", 1, status.Error(codes.Unavailable, "ipam down"))
	if err := second.Start(t.Context()); status.Code(err) != codes.Unavailable {
		t.Fatalf("Start with IPAM down = %v, want its Unavailable", err)
	}
	if got, _, err := second.Services().List(lb.Query{Limit: 10}); err != nil || len(got) != 1 {
		t.Errorf("services with IPAM down: %v, %v; want the restored one", got, err)
	}
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _, err := second.Services().List(lb.Query{Limit: 10})
	if err != nil || len(got) != 1 || !proto.Equal(got[0], stored) {
		t.Errorf("restored services %v, %v; want [%v]", got, err, stored)
	}
}

// TestRunServiceFlowGC checks that the loop expires idle flows.
func TestRunServiceFlowGC(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	a := w.agent(t)
	idle := bpfmaps.Flow{ServiceID: 1, Proto: unix.IPPROTO_TCP}
	busy := bpfmaps.Flow{ServiceID: 2, Proto: unix.IPPROTO_TCP}
	w.bpf.AddFlow(idle)
	w.bpf.AddFlow(busy)
	w.bpf.SetExpired(func(f bpfmaps.Flow) bool { return f == idle })
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { a.RunServiceFlowGC(ctx, time.Millisecond) })
	testpoll.Until(t, 5*time.Second, func() error {
		if flows := w.bpf.Flows(); !slices.Equal(flows, []bpfmaps.Flow{busy}) {
			return errors.New("idle flow not expired yet")
		}
		return nil
	})
}
