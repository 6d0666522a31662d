// Package server is the gRPC face of axon-datapath: the CNI shim's calls
// (create, delete, check, GC, readiness), node information, remote nodes
// and service load balancing, served by the node agent.
package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/lb"
	"github.com/axon-cni/axon/services/datapath/remote"
	"github.com/axon-cni/axon/services/internal/grpcerr"
	"github.com/axon-cni/axon/services/internal/paging"
)

// Endpoints is the endpoint lifecycle (endpoint.Manager).
type Endpoints interface {
	CreateEndpoint(ctx context.Context, req *datapathv1alpha1.CreateEndpointRequest) (*datapathv1alpha1.Endpoint, error)
	DeleteEndpoint(ctx context.Context, att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error)
	GetEndpoint(att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error)
	ListEndpoints() ([]*datapathv1alpha1.Endpoint, error)
	CheckEndpoint(ctx context.Context, req *datapathv1alpha1.CheckEndpointRequest) (*datapathv1alpha1.CheckEndpointResponse, error)
	GarbageCollect(ctx context.Context, network string, valid []*datapathv1alpha1.Attachment, minAge time.Duration, dryRun bool) ([]*datapathv1alpha1.Endpoint, uint32, error)
}

// RemoteNodes are the remote nodes given by API (remote.Manager).
type RemoteNodes interface {
	UpsertRemoteNode(n *datapathv1alpha1.RemoteNode, expectedRev string) (*datapathv1alpha1.RemoteNode, error)
	DeleteRemoteNode(name, expectedRev string) (*datapathv1alpha1.RemoteNode, error)
	ListRemoteNodes() []*datapathv1alpha1.RemoteNode
}

// Services is the node's service load balancer (lb.Manager).
type Services interface {
	Upsert(ctx context.Context, svc *datapathv1alpha1.Service, expectedRev string) (*datapathv1alpha1.Service, error)
	Apply(ctx context.Context, services []*datapathv1alpha1.Service, deletes []*datapathv1alpha1.Frontend, replaceAll bool) (lb.Result, error)
	Delete(ctx context.Context, fe *datapathv1alpha1.Frontend, expectedRev string) (*datapathv1alpha1.Service, error)
	List(q lb.Query) ([]*datapathv1alpha1.Service, string, error)
}

// Node reports the node's readiness, configuration and status (agent.Agent).
type Node interface {
	Readiness() (datapathv1alpha1.ReadinessState, []string)
	NodeConfig() *datapathv1alpha1.NodeConfig
	NodeStatus() *datapathv1alpha1.NodeStatus
}

// Server implements datapathv1alpha1.DatapathServiceServer.
type Server struct {
	datapathv1alpha1.UnimplementedDatapathServiceServer
	endpoints Endpoints
	remotes   RemoteNodes
	services  Services
	node      Node
	gcMinAge  time.Duration
}

// New returns a Server; gcMinAge protects endpoints younger than it from a
// GC whose caller did not say (an ADD racing the runtime's snapshot of live
// pods).
func New(endpoints Endpoints, remotes RemoteNodes, services Services, node Node, gcMinAge time.Duration) *Server {
	return &Server{endpoints: endpoints, remotes: remotes, services: services, node: node, gcMinAge: gcMinAge}
}

// codeOf is the one table from the agent's errors to gRPC codes. An IPAM
// failure keeps IPAM's status (grpcerr keeps a status error's code), so the
// CNI shim can tell an exhausted pool from an unknown one; anything else is
// internal.
var codeOf = grpcerr.Table{
	{Err: endpoint.ErrInvalid, Code: codes.InvalidArgument},
	{Err: endpoint.ErrNotFound, Code: codes.NotFound},
	{Err: endpoint.ErrExists, Code: codes.AlreadyExists},
	{Err: endpoint.ErrNetNS, Code: codes.FailedPrecondition},
	{Err: endpoint.ErrMapFull, Code: codes.ResourceExhausted},
	{Err: endpoint.ErrNotReady, Code: codes.Unavailable},
	{Err: remote.ErrInvalid, Code: codes.InvalidArgument},
	{Err: remote.ErrNotReady, Code: codes.Unavailable},
	{Err: remote.ErrConflict, Code: codes.Aborted},
	{Err: lb.ErrInvalid, Code: codes.InvalidArgument},
	{Err: lb.ErrConflict, Code: codes.Aborted},
	{Err: lb.ErrMapFull, Code: codes.ResourceExhausted},
	{Err: lb.ErrNotReady, Code: codes.Unavailable},
	{Err: lb.ErrUnavailable, Code: codes.FailedPrecondition},
}

// toStatus maps an agent error to a gRPC status error.
func toStatus(err error) error { return codeOf.Status(err) }

// CreateEndpoint implements DatapathService.
func (s *Server) CreateEndpoint(ctx context.Context, req *datapathv1alpha1.CreateEndpointRequest) (*datapathv1alpha1.CreateEndpointResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	ep, err := s.endpoints.CreateEndpoint(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.CreateEndpointResponse{Endpoint: ep}, nil
}

// DeleteEndpoint implements DatapathService.
func (s *Server) DeleteEndpoint(ctx context.Context, req *datapathv1alpha1.DeleteEndpointRequest) (*datapathv1alpha1.DeleteEndpointResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	ep, err := s.endpoints.DeleteEndpoint(ctx, req.GetAttachment())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.DeleteEndpointResponse{Endpoint: ep}, nil
}

// GetEndpoint implements DatapathService.
func (s *Server) GetEndpoint(_ context.Context, req *datapathv1alpha1.GetEndpointRequest) (*datapathv1alpha1.GetEndpointResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	ep, err := s.endpoints.GetEndpoint(req.GetAttachment())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.GetEndpointResponse{Endpoint: ep}, nil
}

// ListEndpoints implements DatapathService. A node has at most a few
// hundred endpoints; pages are cut from the list ordered by attachment.
func (s *Server) ListEndpoints(_ context.Context, req *datapathv1alpha1.ListEndpointsRequest) (*datapathv1alpha1.ListEndpointsResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	limit, after, err := paging.Parse(endpointList(req), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err // a status already
	}
	eps, err := s.endpoints.ListEndpoints()
	if err != nil {
		return nil, toStatus(err)
	}
	return pageEndpoints(eps, req, after, limit), nil
}

// endpointList names the listing req asks for, filters included, so that a
// page token serves only the listing that returned it.
func endpointList(req *datapathv1alpha1.ListEndpointsRequest) string {
	return fmt.Sprintf("datapath.ListEndpoints pod_namespace=%q pod_name=%q", req.GetPodNamespace(), req.GetPodName())
}

// pageEndpoints returns the page of eps after the attachment key after (its
// token), matching req's filters, at most limit long and no larger than
// paging.MaxPageBytes (annotations make endpoints large).
func pageEndpoints(eps []*datapathv1alpha1.Endpoint, req *datapathv1alpha1.ListEndpointsRequest, after string, limit int) *datapathv1alpha1.ListEndpointsResponse {
	key := func(ep *datapathv1alpha1.Endpoint) string {
		return ep.GetAttachment().GetContainerId() + "/" + ep.GetAttachment().GetInterfaceName()
	}
	// The token is the last key of a page: the order must be the keys'.
	sorted := slices.SortedFunc(slices.Values(eps), func(a, b *datapathv1alpha1.Endpoint) int { return strings.Compare(key(a), key(b)) })
	resp := &datapathv1alpha1.ListEndpointsResponse{}
	budget := paging.NewBudget(0)
	for _, ep := range sorted {
		if (after != "" && key(ep) <= after) ||
			(req.GetPodNamespace() != "" && ep.GetPodNamespace() != req.GetPodNamespace()) ||
			(req.GetPodName() != "" && ep.GetPodName() != req.GetPodName()) {
			continue
		}
		if len(resp.Endpoints) == limit || !budget.Take(ep) {
			resp.NextPageToken = paging.Token(endpointList(req), key(resp.Endpoints[len(resp.Endpoints)-1]))
			break
		}
		resp.Endpoints = append(resp.Endpoints, ep)
	}
	return resp
}

// CheckEndpoint implements DatapathService.
func (s *Server) CheckEndpoint(ctx context.Context, req *datapathv1alpha1.CheckEndpointRequest) (*datapathv1alpha1.CheckEndpointResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	resp, err := s.endpoints.CheckEndpoint(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// GarbageCollectEndpoints implements DatapathService.
func (s *Server) GarbageCollectEndpoints(ctx context.Context, req *datapathv1alpha1.GarbageCollectEndpointsRequest) (*datapathv1alpha1.GarbageCollectEndpointsResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	minAge := s.gcMinAge
	if d := req.GetMinAge(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, status.Error(codes.InvalidArgument, "min_age must be a non-negative duration")
		}
		minAge = d.AsDuration()
	}
	for _, att := range req.GetValidAttachments() {
		if att.GetContainerId() == "" || att.GetInterfaceName() == "" {
			return nil, status.Error(codes.InvalidArgument, "valid_attachments entries need container_id and interface_name")
		}
	}
	removed, released, err := s.endpoints.GarbageCollect(ctx, req.GetNetwork(), req.GetValidAttachments(), minAge, req.GetDryRun())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.GarbageCollectEndpointsResponse{Removed: removed, ReleasedAllocations: released}, nil
}

// CheckReady implements DatapathService.
func (s *Server) CheckReady(context.Context, *datapathv1alpha1.CheckReadyRequest) (*datapathv1alpha1.CheckReadyResponse, error) {
	state, reasons := s.node.Readiness()
	return &datapathv1alpha1.CheckReadyResponse{Readiness: state, Reasons: reasons}, nil
}

// GetNodeConfig implements DatapathService.
func (s *Server) GetNodeConfig(context.Context, *datapathv1alpha1.GetNodeConfigRequest) (*datapathv1alpha1.GetNodeConfigResponse, error) {
	return &datapathv1alpha1.GetNodeConfigResponse{Config: s.node.NodeConfig()}, nil
}

// GetNodeStatus implements DatapathService.
func (s *Server) GetNodeStatus(context.Context, *datapathv1alpha1.GetNodeStatusRequest) (*datapathv1alpha1.GetNodeStatusResponse, error) {
	return &datapathv1alpha1.GetNodeStatusResponse{Status: s.node.NodeStatus()}, nil
}

// UpsertRemoteNode implements DatapathService.
func (s *Server) UpsertRemoteNode(_ context.Context, req *datapathv1alpha1.UpsertRemoteNodeRequest) (*datapathv1alpha1.UpsertRemoteNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	n, err := s.remotes.UpsertRemoteNode(req.GetNode(), req.GetExpectedRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.UpsertRemoteNodeResponse{Node: n}, nil
}

// DeleteRemoteNode implements DatapathService.
func (s *Server) DeleteRemoteNode(_ context.Context, req *datapathv1alpha1.DeleteRemoteNodeRequest) (*datapathv1alpha1.DeleteRemoteNodeResponse, error) {
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	n, err := s.remotes.DeleteRemoteNode(req.GetName(), req.GetExpectedRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.DeleteRemoteNodeResponse{Node: n}, nil
}

// remoteNodeList names ListRemoteNodes' listing for its page tokens.
const remoteNodeList = "datapath.ListRemoteNodes"

// ListRemoteNodes implements DatapathService. A cluster has at most a few
// thousand nodes; pages are cut from the list ordered by name.
func (s *Server) ListRemoteNodes(_ context.Context, req *datapathv1alpha1.ListRemoteNodesRequest) (*datapathv1alpha1.ListRemoteNodesResponse, error) {
	limit, after, err := paging.Parse(remoteNodeList, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err // a status already
	}
	// The token is the last name of a page: the order must be the names'.
	nodes := slices.SortedFunc(slices.Values(s.remotes.ListRemoteNodes()), func(a, b *datapathv1alpha1.RemoteNode) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
	resp := &datapathv1alpha1.ListRemoteNodesResponse{}
	budget := paging.NewBudget(0)
	for _, n := range nodes {
		if after != "" && n.GetName() <= after {
			continue
		}
		if len(resp.Nodes) == limit || !budget.Take(n) {
			resp.NextPageToken = paging.Token(remoteNodeList, resp.Nodes[len(resp.Nodes)-1].GetName())
			break
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	return resp, nil
}

// UpsertService implements DatapathService.
func (s *Server) UpsertService(ctx context.Context, req *datapathv1alpha1.UpsertServiceRequest) (*datapathv1alpha1.UpsertServiceResponse, error) {
	svc, err := s.services.Upsert(ctx, req.GetService(), req.GetExpectedRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.UpsertServiceResponse{Service: svc}, nil
}

// UpsertServices implements DatapathService.
func (s *Server) UpsertServices(ctx context.Context, req *datapathv1alpha1.UpsertServicesRequest) (*datapathv1alpha1.UpsertServicesResponse, error) {
	res, err := s.services.Apply(ctx, req.GetServices(), req.GetDeletes(), req.GetReplaceAll())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.UpsertServicesResponse{
		Changed: int32(res.Changed), Unchanged: int32(res.Unchanged), Deleted: int32(res.Deleted),
	}, nil
}

// DeleteService implements DatapathService.
func (s *Server) DeleteService(ctx context.Context, req *datapathv1alpha1.DeleteServiceRequest) (*datapathv1alpha1.DeleteServiceResponse, error) {
	svc, err := s.services.Delete(ctx, req.GetFrontend(), req.GetExpectedRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.DeleteServiceResponse{Service: svc}, nil
}

// ListServices implements DatapathService.
func (s *Server) ListServices(_ context.Context, req *datapathv1alpha1.ListServicesRequest) (*datapathv1alpha1.ListServicesResponse, error) {
	list := serviceList(req)
	limit, after, err := paging.Parse(list, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err // a status already
	}
	svcs, next, err := s.services.List(lb.Query{
		Namespace: req.GetServiceNamespace(), Name: req.GetServiceName(), Type: req.GetType(), After: after, Limit: limit,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &datapathv1alpha1.ListServicesResponse{Services: svcs, NextPageToken: paging.Token(list, next)}, nil
}

// serviceList names the listing req asks for, filters included, so that a
// page token serves only the listing that returned it.
func serviceList(req *datapathv1alpha1.ListServicesRequest) string {
	return fmt.Sprintf("datapath.ListServices service_namespace=%q service_name=%q type=%d", req.GetServiceNamespace(), req.GetServiceName(), req.GetType())
}
