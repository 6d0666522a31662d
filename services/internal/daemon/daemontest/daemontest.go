// Package daemontest runs a service's [daemon.Spec] inside a test, as its
// binary would run it, and waits on its health: the test side of the daemon
// bootstrap, for the tests of service binaries.
package daemontest

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/axon-cni/axon/bpf/testpoll"
	"github.com/axon-cni/axon/services/internal/daemon"
)

// HealthInterval is the health check interval Serve gives a daemon, short so
// that tests see health changes quickly.
const HealthInterval = 20 * time.Millisecond

// Serve runs spec on a unix socket in a temporary directory, without TCP or
// metrics listeners and with HealthInterval; args come after those flags,
// so they may override them. It returns a connection to the daemon and what
// it logs. The daemon stops, and must stop within 10 s, when the test ends.
func Serve(t *testing.T, spec daemon.Spec, args ...string) (*grpc.ClientConn, *Log) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	args = append([]string{
		"--grpc-addr=", "--grpc-socket", sock, "--metrics-addr=",
		"--health-interval", HealthInterval.String(),
	}, args...)
	ctx, cancel := context.WithCancel(t.Context())
	log := &Log{}
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, spec, args, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("axon-%s stopped with %v", spec.Name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("axon-%s did not stop within 10s", spec.Name)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, log
}

// Health returns the serving status conn reports for service ("" for the
// whole server), waiting up to 10 s for the daemon to answer at all.
func Health(t *testing.T, conn *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	var st healthpb.HealthCheckResponse_ServingStatus
	testpoll.Until(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return fmt.Errorf("health of %q never answered: %w", service, err)
		}
		st = resp.GetStatus()
		return nil
	})
	return st
}

// WaitLogged waits up to 10 s until log contains s.
func WaitLogged(t *testing.T, log *Log, s string) {
	t.Helper()
	testpoll.Until(t, 10*time.Second, func() error {
		if !bytes.Contains(log.Bytes(), []byte(s)) {
			return fmt.Errorf("never logged %q; log:\n%s", s, log.Bytes())
		}
		return nil
	})
}

// Log collects a daemon's log output; it is safe for concurrent use.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (l *Log) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}
