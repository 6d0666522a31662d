package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	lbipamv1alpha1 "github.com/axon-cni/axon/gen/axon/lbipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon/daemontest"
	"github.com/axon-cni/axon/services/internal/etcdtest"
)

// TestNotServingWhileUnimplemented checks that axon-lbipam, whose API is not
// written yet, never reports SERVING and says why, once.
func TestNotServingWhileUnimplemented(t *testing.T) {
	// Its etcd is up: the failing check is the unimplemented API alone.
	etcd := etcdtest.Single(t)
	conn, log := daemontest.Serve(t, spec(), "--etcd-endpoints", strings.Join(etcd.Endpoints(), ","))
	const reason = "axon.lbipam.v1alpha1.LBIPAMService is not implemented yet"
	daemontest.WaitLogged(t, log, reason)
	// Several check intervals later the status has not changed and the
	// lasting failure was logged only once.
	time.Sleep(5 * daemontest.HealthInterval)
	for _, svc := range []string{"", lbipamv1alpha1.LBIPAMService_ServiceDesc.ServiceName} {
		if got := daemontest.Health(t, conn, svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q = %s, want NOT_SERVING", svc, got)
		}
	}
	if n := bytes.Count(log.Bytes(), []byte(reason)); n != 1 {
		t.Errorf("reason logged %d times, want once; log:\n%s", n, log.Bytes())
	}
	_, err := lbipamv1alpha1.NewLBIPAMServiceClient(conn).ListPools(t.Context(), &lbipamv1alpha1.ListPoolsRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ListPools = %v, want UNIMPLEMENTED", err)
	}
}
