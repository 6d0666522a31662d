// Package server is the gRPC face of axon-ipam: it checks request shapes,
// calls the allocator, and maps its errors to status codes through one
// table.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
	"github.com/axon-cni/axon/services/internal/grpcerr"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/allocator"
	"github.com/axon-cni/axon/services/ipam/client/errinfo"
)

// Server implements ipamv1alpha1.IPAMServiceServer.
type Server struct {
	ipamv1alpha1.UnimplementedIPAMServiceServer
	alloc   *allocator.Allocator
	log     *slog.Logger
	metrics *Metrics
}

// New returns a Server backed by alloc.
func New(alloc *allocator.Allocator, m *Metrics, log *slog.Logger) *Server {
	return &Server{alloc: alloc, metrics: m, log: log}
}

// codeOf is the one table from allocator errors to gRPC codes.
var codeOf = grpcerr.Table{
	// The caller's own deadline or cancellation first: the allocator wraps
	// an interrupted etcd call as ErrUnavailable too.
	{Err: context.DeadlineExceeded, Code: codes.DeadlineExceeded},
	{Err: context.Canceled, Code: codes.Canceled},
	{Err: allocator.ErrInvalid, Code: codes.InvalidArgument},
	{Err: allocator.ErrNotFound, Code: codes.NotFound},
	{Err: allocator.ErrExists, Code: codes.AlreadyExists},
	{Err: allocator.ErrPrecondition, Code: codes.FailedPrecondition},
	{Err: allocator.ErrExhausted, Code: codes.ResourceExhausted},
	{Err: allocator.ErrConflict, Code: codes.Aborted},
	{Err: allocator.ErrUnavailable, Code: codes.Unavailable},
}

// toStatus maps an allocator error to a gRPC status error, with the
// ErrorInfo detail of its reason (see reasonOf).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	return errinfo.With(status.Convert(codeOf.Status(err)), reasonOf(err)).Err()
}

// reasonOf returns the contract's ErrorInfo reason for err, or "": an
// exhausted pool must be told apart from gRPC's own RESOURCE_EXHAUSTED
// (a message over the size limit), which the CNI shim must not report as
// "address pool exhausted".
func reasonOf(err error) string {
	if errors.Is(err, allocator.ErrExhausted) && codeOf.Code(err) == codes.ResourceExhausted {
		return errinfo.ReasonPoolExhausted
	}
	return ""
}

func handleOf(h *ipamv1alpha1.OwnerHandle) allocator.Handle {
	return allocator.Handle{ContainerID: h.GetContainerId(), Interface: h.GetInterfaceName()}
}

// CreatePool implements IPAMService.
func (s *Server) CreatePool(ctx context.Context, req *ipamv1alpha1.CreatePoolRequest) (*ipamv1alpha1.CreatePoolResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	p, err := s.alloc.CreatePool(ctx, req.GetPool())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.CreatePoolResponse{Pool: p}, nil
}

// GetPool implements IPAMService.
func (s *Server) GetPool(ctx context.Context, req *ipamv1alpha1.GetPoolRequest) (*ipamv1alpha1.GetPoolResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	p, err := s.alloc.GetPool(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.GetPoolResponse{Pool: p}, nil
}

// ListPools implements IPAMService. Pools are few; the page is cut from the
// full, name-ordered list (and ends early at paging.MaxPageBytes).
func (s *Server) ListPools(ctx context.Context, req *ipamv1alpha1.ListPoolsRequest) (*ipamv1alpha1.ListPoolsResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	const list = "ipam.ListPools"
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	pools, err := s.alloc.ListPools(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &ipamv1alpha1.ListPoolsResponse{}
	budget := paging.NewBudget(0)
	for _, p := range pools {
		if after != "" && p.GetName() <= after {
			continue
		}
		if len(out.Pools) == limit || !budget.Take(p) {
			out.NextPageToken = paging.Token(list, out.Pools[len(out.Pools)-1].GetName())
			break
		}
		out.Pools = append(out.Pools, p)
	}
	return out, nil
}

// UpdatePool implements IPAMService.
func (s *Server) UpdatePool(ctx context.Context, req *ipamv1alpha1.UpdatePoolRequest) (*ipamv1alpha1.UpdatePoolResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	p, err := s.alloc.UpdatePool(ctx, req.GetPool(), req.GetExpectedRevision(), req.GetAllowMissing())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.UpdatePoolResponse{Pool: p}, nil
}

// DeletePool implements IPAMService.
func (s *Server) DeletePool(ctx context.Context, req *ipamv1alpha1.DeletePoolRequest) (*ipamv1alpha1.DeletePoolResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	resp, err := s.alloc.DeletePool(ctx, req.GetName(), req.GetExpectedRevision())
	return resp, toStatus(err)
}

// CreateNode implements IPAMService.
func (s *Server) CreateNode(ctx context.Context, req *ipamv1alpha1.CreateNodeRequest) (*ipamv1alpha1.CreateNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	n, err := s.alloc.CreateNode(ctx, req.GetNode())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.CreateNodeResponse{Node: n}, nil
}

// GetNode implements IPAMService.
func (s *Server) GetNode(ctx context.Context, req *ipamv1alpha1.GetNodeRequest) (*ipamv1alpha1.GetNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	n, err := s.alloc.GetNode(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.GetNodeResponse{Node: n}, nil
}

// ListNodes implements IPAMService.
func (s *Server) ListNodes(ctx context.Context, req *ipamv1alpha1.ListNodesRequest) (*ipamv1alpha1.ListNodesResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	const list = "ipam.ListNodes"
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	nodes, next, err := s.alloc.ListNodes(ctx, after, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ListNodesResponse{Nodes: nodes, NextPageToken: paging.Token(list, next)}, nil
}

// UpdateNode implements IPAMService.
func (s *Server) UpdateNode(ctx context.Context, req *ipamv1alpha1.UpdateNodeRequest) (*ipamv1alpha1.UpdateNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	n, err := s.alloc.UpdateNode(ctx, req.GetNode(), req.GetExpectedRevision(), req.GetAllowMissing())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.UpdateNodeResponse{Node: n}, nil
}

// DeleteNode implements IPAMService.
func (s *Server) DeleteNode(ctx context.Context, req *ipamv1alpha1.DeleteNodeRequest) (*ipamv1alpha1.DeleteNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	resp, err := s.alloc.DeleteNode(ctx, req.GetName(), req.GetExpectedRevision())
	return resp, toStatus(err)
}

// ClaimBlock implements IPAMService.
func (s *Server) ClaimBlock(ctx context.Context, req *ipamv1alpha1.ClaimBlockRequest) (*ipamv1alpha1.ClaimBlockResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	blocks, err := s.alloc.ClaimBlock(ctx, req.GetNode(), req.GetPool(), req.GetFamily(), req.GetClaimId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ClaimBlockResponse{Blocks: blocks}, nil
}

// ReleaseBlock implements IPAMService.
func (s *Server) ReleaseBlock(ctx context.Context, req *ipamv1alpha1.ReleaseBlockRequest) (*ipamv1alpha1.ReleaseBlockResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	b, err := s.alloc.ReleaseBlock(ctx, req.GetCidr(), req.GetNode(), req.GetExpectedRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ReleaseBlockResponse{Block: b}, nil
}

// ListBlocks implements IPAMService.
func (s *Server) ListBlocks(ctx context.Context, req *ipamv1alpha1.ListBlocksRequest) (*ipamv1alpha1.ListBlocksResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	list := fmt.Sprintf("ipam.ListBlocks node=%q pool=%q family=%d", req.GetNode(), req.GetPool(), req.GetFamily())
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	blocks, next, err := s.alloc.ListBlocks(ctx, allocator.BlockFilter{Node: req.GetNode(), Pool: req.GetPool(), Family: req.GetFamily()}, after, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ListBlocksResponse{Blocks: blocks, NextPageToken: paging.Token(list, next)}, nil
}

// AllocateIP implements IPAMService.
func (s *Server) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.AllocateIPResponse, error) {
	start := time.Now()
	resp, err := s.alloc.AllocateIP(ctx, req)
	s.metrics.observeAllocate(err, time.Since(start))
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// maxAllocateBatch bounds the requests of one AllocateIPs call.
const maxAllocateBatch = 128

// AllocateIPs implements IPAMService.
func (s *Server) AllocateIPs(ctx context.Context, req *ipamv1alpha1.AllocateIPsRequest) (*ipamv1alpha1.AllocateIPsResponse, error) {
	reqs := req.GetRequests()
	if len(reqs) == 0 || len(reqs) > maxAllocateBatch {
		return nil, status.Errorf(codes.InvalidArgument, "requests: %d given, want 1 to %d", len(reqs), maxAllocateBatch)
	}
	start := time.Now()
	resps, errs := s.alloc.AllocateMany(ctx, reqs)
	took := time.Since(start)
	out := &ipamv1alpha1.AllocateIPsResponse{Results: make([]*ipamv1alpha1.AllocateIPResult, len(reqs))}
	for i, err := range errs {
		s.metrics.observeAllocate(err, took)
		if err != nil {
			st := status.Convert(toStatus(err))
			out.Results[i] = &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Error{
				Error: &ipamv1alpha1.Status{Code: int32(st.Code()), Message: st.Message(), Reason: reasonOf(err)},
			}}
			continue
		}
		out.Results[i] = &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Response{Response: resps[i]}}
	}
	return out, nil
}

// ReleaseIP implements IPAMService.
func (s *Server) ReleaseIP(ctx context.Context, req *ipamv1alpha1.ReleaseIPRequest) (*ipamv1alpha1.ReleaseIPResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	alloc, holds, err := s.alloc.Release(ctx, handleOf(req.GetHandle()), req.GetExpectedSequence(), req.GetDiscardStickyHold())
	if err != nil {
		return nil, toStatus(err)
	}
	if alloc != nil {
		s.metrics.releases.Inc()
	}
	return &ipamv1alpha1.ReleaseIPResponse{Allocation: alloc, Holds: holds}, nil
}

// GetAllocation implements IPAMService.
func (s *Server) GetAllocation(ctx context.Context, req *ipamv1alpha1.GetAllocationRequest) (*ipamv1alpha1.GetAllocationResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	var alloc *ipamv1alpha1.Allocation
	var err error
	switch k := req.GetKey().(type) {
	case *ipamv1alpha1.GetAllocationRequest_Handle:
		alloc, err = s.alloc.GetAllocation(ctx, handleOf(k.Handle))
	case *ipamv1alpha1.GetAllocationRequest_Ip:
		alloc, err = s.alloc.GetAllocationByIP(ctx, k.Ip)
	default:
		return nil, status.Error(codes.InvalidArgument, "one of handle or ip is required")
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.GetAllocationResponse{Allocation: alloc}, nil
}

// ListAllocations implements IPAMService.
func (s *Server) ListAllocations(ctx context.Context, req *ipamv1alpha1.ListAllocationsRequest) (*ipamv1alpha1.ListAllocationsResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	list := fmt.Sprintf("ipam.ListAllocations node=%q pool=%q pod_namespace=%q", req.GetNode(), req.GetPool(), req.GetPodNamespace())
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	f := allocator.AllocationFilter{Node: req.GetNode(), Pool: req.GetPool(), Namespace: req.GetPodNamespace()}
	allocs, next, err := s.alloc.ListAllocations(ctx, f, after, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ListAllocationsResponse{Allocations: allocs, NextPageToken: paging.Token(list, next)}, nil
}

// GarbageCollect implements IPAMService.
func (s *Server) GarbageCollect(ctx context.Context, req *ipamv1alpha1.GarbageCollectRequest) (*ipamv1alpha1.GarbageCollectResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	live := make([]allocator.Handle, 0, len(req.GetLiveHandles()))
	for _, h := range req.GetLiveHandles() {
		live = append(live, handleOf(h))
	}
	var minAge *time.Duration
	if req.GetMinAge() != nil {
		if err := req.GetMinAge().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "min_age: %v", err)
		}
		d := req.GetMinAge().AsDuration()
		if d < 0 {
			return nil, status.Error(codes.InvalidArgument, "min_age must not be negative")
		}
		minAge = &d
	}
	released, err := s.alloc.GarbageCollect(ctx, req.GetNode(), live, minAge, req.GetDryRun())
	if err != nil {
		return nil, toStatus(fmt.Errorf("garbage-collect node %s: %w", bounded.Quote(req.GetNode()), err))
	}
	if !req.GetDryRun() {
		s.metrics.gcReleased.Add(float64(len(released)))
	}
	return &ipamv1alpha1.GarbageCollectResponse{Released: released}, nil
}

// WatchBlocks implements IPAMService.
func (s *Server) WatchBlocks(req *ipamv1alpha1.WatchBlocksRequest, stream ipamv1alpha1.IPAMService_WatchBlocksServer) error {
	if err := checkLimits(req); err != nil {
		return err
	}
	f := allocator.BlockFilter{Node: req.GetNode(), Pool: req.GetPool(), Family: req.GetFamily()}
	err := s.alloc.WatchBlocks(stream.Context(), f, stream.Send)
	if stream.Context().Err() != nil {
		return nil // the client went away
	}
	return toStatus(err)
}

// ReserveIP implements IPAMService.
func (s *Server) ReserveIP(ctx context.Context, req *ipamv1alpha1.ReserveIPRequest) (*ipamv1alpha1.ReserveIPResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	var ttl *time.Duration
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ttl: %v", err)
		}
		d := req.GetTtl().AsDuration()
		ttl = &d
	}
	r, err := s.alloc.ReserveIP(ctx, req.GetIp(), req.GetKey(), ttl)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ReserveIPResponse{Reservation: r}, nil
}

// UnreserveIP implements IPAMService.
func (s *Server) UnreserveIP(ctx context.Context, req *ipamv1alpha1.UnreserveIPRequest) (*ipamv1alpha1.UnreserveIPResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	dropped, err := s.alloc.UnreserveIP(ctx, req.GetIp(), req.GetKey())
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.UnreserveIPResponse{Dropped: dropped}, nil
}

// ListReservations implements IPAMService.
func (s *Server) ListReservations(ctx context.Context, req *ipamv1alpha1.ListReservationsRequest) (*ipamv1alpha1.ListReservationsResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	list := fmt.Sprintf("ipam.ListReservations pool=%q key=%q", req.GetPool(), req.GetKey())
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	res, next, err := s.alloc.ListReservations(ctx, req.GetPool(), req.GetKey(), after, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ipamv1alpha1.ListReservationsResponse{Reservations: res, NextPageToken: paging.Token(list, next)}, nil
}
