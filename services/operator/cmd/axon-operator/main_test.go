package main

import (
	"bytes"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/services/internal/daemon/daemontest"
)

// TestNotServingWhileUnimplemented checks that axon-operator, which does not
// watch the Kubernetes API yet, never reports SERVING and says why, once.
func TestNotServingWhileUnimplemented(t *testing.T) {
	conn, log := daemontest.Serve(t, spec())
	const reason = "axon-operator: watching the Kubernetes API is not implemented yet"
	daemontest.WaitLogged(t, log, reason)
	// Several check intervals later the status has not changed and the
	// lasting failure was logged only once.
	time.Sleep(5 * daemontest.HealthInterval)
	if got := daemontest.Health(t, conn, ""); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health = %s, want NOT_SERVING", got)
	}
	if n := bytes.Count(log.Bytes(), []byte(reason)); n != 1 {
		t.Errorf("reason logged %d times, want once; log:\n%s", n, log.Bytes())
	}
}
