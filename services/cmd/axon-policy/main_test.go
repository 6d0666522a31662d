package main

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	policyv1alpha1 "github.com/axon-cni/axon/gen/axon/policy/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon/daemontest"
)

// TestNotServingWhileUnimplemented checks that axon-policy, whose API is not
// written yet, never reports SERVING and says why, once.
func TestNotServingWhileUnimplemented(t *testing.T) {
	conn, log := daemontest.Serve(t, spec())
	const reason = "axon.policy.v1alpha1.PolicyService is not implemented yet"
	daemontest.WaitLogged(t, log, reason)
	// Several check intervals later the status has not changed and the
	// lasting failure was logged only once.
	time.Sleep(5 * daemontest.HealthInterval)
	for _, svc := range []string{"", policyv1alpha1.PolicyService_ServiceDesc.ServiceName} {
		if got := daemontest.Health(t, conn, svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q = %s, want NOT_SERVING", svc, got)
		}
	}
	if n := bytes.Count(log.Bytes(), []byte(reason)); n != 1 {
		t.Errorf("reason logged %d times, want once; log:\n%s", n, log.Bytes())
	}
	_, err := policyv1alpha1.NewPolicyServiceClient(conn).ListIdentities(t.Context(), &policyv1alpha1.ListIdentitiesRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ListIdentities = %v, want UNIMPLEMENTED", err)
	}
}
