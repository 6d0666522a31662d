package main

import (
	"bytes"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// serveHealth serves a gRPC health service reporting st on a loopback port.
func serveHealth(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// TestStatusFailsUnlessAllServing checks that a service reporting
// NOT_SERVING (as axon-policy and axon-lbipam do while their APIs are not
// implemented) shows as such and fails the command.
func TestStatusFailsUnlessAllServing(t *testing.T) {
	up := serveHealth(t, healthpb.HealthCheckResponse_SERVING)
	down := serveHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	tests := []struct {
		name       string
		ep         endpoints
		wantErr    string
		wantStatus map[string]string // every service's STATUS column
	}{
		{
			name:       "all serving",
			ep:         endpoints{ipam: up, lbipam: up, policy: up, operator: up},
			wantStatus: map[string]string{"ipam": "SERVING", "lbipam": "SERVING", "policy": "SERVING", "operator": "SERVING"},
		},
		{
			name:       "two not serving",
			ep:         endpoints{ipam: up, lbipam: down, policy: down, operator: up},
			wantErr:    "2 service(s) not serving",
			wantStatus: map[string]string{"ipam": "SERVING", "lbipam": "NOT_SERVING", "policy": "NOT_SERVING", "operator": "SERVING"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ep.timeout = 5 * time.Second
			tc.ep.transport.insecure = true
			var out bytes.Buffer
			err := status(t.Context(), &out, &tc.ep)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Errorf("status() = %v, want %q", err, tc.wantErr)
			}
			// Each service has one line: SERVICE TARGET STATUS.
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) != 3 {
					t.Errorf("line %q has %d fields, want 3", line, len(f))
					continue
				}
				if _, dup := got[f[0]]; dup {
					t.Errorf("%s shown twice", f[0])
				}
				got[f[0]] = f[2]
			}
			if !maps.Equal(got, tc.wantStatus) {
				t.Errorf("statuses = %v, want %v; output:\n%s", got, tc.wantStatus, out.String())
			}
		})
	}
}
