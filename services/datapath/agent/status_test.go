package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// hangingIPAM is the fake IPAM, except that while hung is set its GetNode
// answers nothing: each call waits until its caller gives up, as an IPAM
// whose connection accepts and never answers does.
type hangingIPAM struct {
	*fakeipam.IPAM
	hung atomic.Bool
}

func (h *hangingIPAM) GetNode(ctx context.Context, req *ipamv1alpha1.GetNodeRequest, opts ...grpc.CallOption) (*ipamv1alpha1.GetNodeResponse, error) {
	if h.hung.Load() {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return h.IPAM.GetNode(ctx, req, opts...)
}

// wantReadiness fails unless a's readiness is want, with a reason naming
// IPAM exactly when ipam is set.
func wantReadiness(a *agent.Agent, want datapathv1alpha1.ReadinessState, ipam bool) error {
	got, reasons := a.Readiness()
	named := slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, "IPAM does not answer") })
	if got != want || named != ipam {
		return fmt.Errorf("readiness %v %q, want %v (a reason naming IPAM: %v)", got, reasons, want, ipam)
	}
	return nil
}

// CNI STATUS (CheckReady, Readiness) reports NOT_READY while IPAM does not
// answer, hung or UNAVAILABLE, and READY again once it answers. (Issue 17,
// item 3: the node stayed ready while every ADD failed.)
func TestReadinessFollowsIPAM(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, netip.MustParsePrefix("10.0.1.0/24"))
	ipam := &hangingIPAM{IPAM: w.ipam}
	a, err := agent.New(w.cfg, agent.Deps{
		Namespaces: w.nl, Datapath: w.bpf, IPAM: ipam, Masquerade: w.rules, Sysctl: w.sysctls.write,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := wantReadiness(a, datapathv1alpha1.ReadinessState_READINESS_STATE_READY, false); err != nil {
		t.Fatal(err)
	}

	// The probe as the daemon runs it.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.RunIPAMProbe(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ipam.hung.Store(true)
	testpoll.Until(t, 10*time.Second, func() error {
		return wantReadiness(a, datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY, true)
	})
	ipam.hung.Store(false)
	testpoll.Until(t, 10*time.Second, func() error {
		return wantReadiness(a, datapathv1alpha1.ReadinessState_READINESS_STATE_READY, false)
	})
	cancel()
	<-done

	// IPAM answers UNAVAILABLE (its store is down): no ADD can succeed
	// either. Any other answer is IPAM working.
	for _, tc := range []struct {
		err   error
		ready bool
	}{
		{status.Error(codes.Unavailable, "store unavailable"), false},
		{status.Error(codes.NotFound, "no such node"), true},
		{nil, true},
	} {
		if tc.err != nil {
			w.ipam.FailNext("GetNode", 1, tc.err)
		}
		perr := a.ProbeIPAM(t.Context())
		want := datapathv1alpha1.ReadinessState_READINESS_STATE_READY
		if !tc.ready {
			want = datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY
		}
		if err := wantReadiness(a, want, !tc.ready); err != nil || (perr == nil) != tc.ready {
			t.Errorf("IPAM answering %v: ProbeIPAM = %v; %v", tc.err, perr, err)
		}
	}
}
