package server

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/lb"
	"github.com/axon-cni/axon/services/datapath/remote"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"invalid attachment", fmt.Errorf("%w: bad name", endpoint.ErrInvalid), codes.InvalidArgument},
		{"unknown endpoint", fmt.Errorf("%w: c/eth0", endpoint.ErrNotFound), codes.NotFound},
		{"wired elsewhere", fmt.Errorf("%w: c/eth0", endpoint.ErrExists), codes.AlreadyExists},
		{"unusable netns", fmt.Errorf("%w: /proc/self/ns/net is the node's", endpoint.ErrNetNS), codes.FailedPrecondition},
		{"endpoint map full", fmt.Errorf("%w: eBPF for lxc1: E2BIG", endpoint.ErrMapFull), codes.ResourceExhausted},
		{"node not ready", fmt.Errorf("%w: setting up", endpoint.ErrNotReady), codes.Unavailable},
		{"invalid remote node", fmt.Errorf("%w: no name", remote.ErrInvalid), codes.InvalidArgument},
		{"remote before set-up", fmt.Errorf("%w: setting up", remote.ErrNotReady), codes.Unavailable},
		{"stale revision", fmt.Errorf("%w: at 3", remote.ErrConflict), codes.Aborted},
		{"invalid service", fmt.Errorf("%w: services[3] (10.96.0.10:53/UDP): frontend.port: 0 is not in 1..65535", lb.ErrInvalid), codes.InvalidArgument},
		{"stale service revision", fmt.Errorf("%w: at 00ff", lb.ErrConflict), codes.Aborted},
		{"service map full", fmt.Errorf("%w: would need 5 entries", lb.ErrMapFull), codes.ResourceExhausted},
		{"services not restored", fmt.Errorf("%w: starting", lb.ErrNotReady), codes.Unavailable},
		{"no load balancer maps", lb.ErrUnavailable, codes.FailedPrecondition},
		{"IPAM keeps its code", status.Error(codes.ResourceExhausted, "allocate addresses: IPAM: pool full"), codes.ResourceExhausted},
		{"anything else", errors.New("disk full"), codes.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := toStatus(tc.err)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("toStatus(%v) code = %v, want %v", tc.err, got, tc.want)
			}
			// The message is the error's own (for IPAM's, its status message).
			if want := status.Convert(tc.err).Message(); tc.err != nil && status.Convert(err).Message() != want {
				t.Errorf("message = %q, want %q", status.Convert(err).Message(), want)
			}
		})
	}
}
