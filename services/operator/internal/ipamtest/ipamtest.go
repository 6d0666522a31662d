// Package ipamtest runs the real IPAM service for the operator's tests: the
// allocator on an embedded etcd, served over gRPC on a unix socket, as
// axon-ipam serves it.
package ipamtest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
	ipamserver "github.com/axon-cni/axon/services/ipam/server"
)

// IPAM is a running IPAM service.
type IPAM struct {
	// Alloc is the allocator behind the service, for setting up and
	// checking state without going through gRPC.
	Alloc *allocator.Allocator
	// Client is a client of the service.
	Client ipamv1alpha1.IPAMServiceClient
	// Target is the service's gRPC target (unix:///...), for binaries
	// under test.
	Target string

	srv *grpc.Server
}

// Stop stops serving, as a crashed IPAM would: calls fail with
// Unavailable from then on.
func (i *IPAM) Stop() { i.srv.Stop() }

// Start runs IPAM on a fresh embedded etcd; everything stops when the test
// ends.
func Start(t *testing.T) *IPAM {
	t.Helper()
	cli := etcdtest.Single(t).Client(t)
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alloc, err := allocator.New(ctx, cli, allocator.DefaultConfig(), log)
	if err != nil {
		t.Fatalf("ipamtest: start allocator: %v", err)
	}
	t.Cleanup(alloc.Close)
	sock := filepath.Join(t.TempDir(), "ipam.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("ipamtest: listen: %v", err)
	}
	srv := grpc.NewServer()
	ipamv1alpha1.RegisterIPAMServiceServer(srv, ipamserver.New(alloc, ipamserver.NewMetrics(prometheus.NewRegistry(), alloc), log))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	target := "unix://" + sock
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("ipamtest: dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &IPAM{Alloc: alloc, Client: ipamv1alpha1.NewIPAMServiceClient(conn), Target: target, srv: srv}
}
