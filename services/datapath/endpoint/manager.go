// Package endpoint owns the endpoint lifecycle of the node agent: creating
// a pod's endpoint (addresses from IPAM, veth plumbing, eBPF map entries and
// program), deleting, checking and garbage-collecting it, restoring the
// endpoints at start-up, replaying the DELs axon-cni queued while the agent
// was down, and releasing deleted endpoints' addresses in the background
// (queued on disk, so that no DEL waits for IPAM). Each endpoint has a
// record on disk, so a restart loses nothing. Every dependency (IPAM,
// netlink, the veth plumbing, the eBPF maps) arrives through an interface.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// IdentityInit is the security identity of an endpoint the policy service
// has not given one yet (Cilium's reserved "init" identity).
const IdentityInit = uint32(commonv1alpha1.ReservedIdentity_RESERVED_IDENTITY_INIT)

// Config configures a Manager.
type Config struct {
	// NodeName is this node's name in IPAM.
	NodeName string
	// StateDir keeps one record per endpoint, and the queued releases.
	StateDir string
	// MTU is the node's pod MTU, the largest a pod may ask for.
	MTU int
	// GSOMaxSize, when not 0, is the GSO and GRO size of pods' veths (BIG
	// TCP).
	GSOMaxSize int
	// DeleteQueue is where axon-cni queues DELs while the agent is down.
	DeleteQueue string
	// Reserved reports the endpoints a GC never removes (the node's health
	// endpoint); nil reserves none.
	Reserved func(*datapathv1alpha1.Attachment) bool
	// HostPorts programs endpoints' port mappings (HostPort); nil refuses
	// endpoints that have any.
	HostPorts HostPorts
}

// IPAM is what the endpoint lifecycle asks of IPAM.
type IPAM interface {
	AllocateIP(ctx context.Context, in *ipamv1alpha1.AllocateIPRequest, opts ...grpc.CallOption) (*ipamv1alpha1.AllocateIPResponse, error)
	ReleaseIP(ctx context.Context, in *ipamv1alpha1.ReleaseIPRequest, opts ...grpc.CallOption) (*ipamv1alpha1.ReleaseIPResponse, error)
	GetAllocation(ctx context.Context, in *ipamv1alpha1.GetAllocationRequest, opts ...grpc.CallOption) (*ipamv1alpha1.GetAllocationResponse, error)
	GarbageCollect(ctx context.Context, in *ipamv1alpha1.GarbageCollectRequest, opts ...grpc.CallOption) (*ipamv1alpha1.GarbageCollectResponse, error)
}

// Plumber wires a pod's veth pair; *veth.Plumber is the real one.
type Plumber interface {
	Create(s veth.Spec) (veth.Result, error)
	Delete(hostName string) error
	Check(s veth.Spec, res veth.Result) []veth.Problem
	// IsNode reports whether netnsPath is the node's own network
	// namespace; an error wraps nl.ErrNetNS when it is no network
	// namespace.
	IsNode(netnsPath string) (bool, error)
}

// Manager creates, checks and removes the node's endpoints.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	ipam    IPAM
	plumber Plumber
	node    nl.Handle        // in the node's namespace
	bpf     bpfmaps.Datapath // nil without the eBPF datapath
	ready   func() error     // nil once the node can take endpoints

	store store
	locks attachmentLocks // serializes the changes of one endpoint
	pods  podKeys         // tells pods apart in the device map

	// releaseWake holds one pending wake-up of the release worker (see
	// ReleasesQueued).
	releaseWake chan struct{}

	mu     sync.Mutex // guards nextID
	nextID uint32
}

// New returns a Manager. node is a netlink handle in the node's namespace;
// bpf may be nil (no eBPF datapath); ready says whether the node can take
// endpoints yet (nil: always).
func New(cfg Config, ipam IPAM, plumber Plumber, node nl.Handle, bpf bpfmaps.Datapath, ready func() error, log *slog.Logger) *Manager {
	if ready == nil {
		ready = func() error { return nil }
	}
	if cfg.Reserved == nil {
		cfg.Reserved = func(*datapathv1alpha1.Attachment) bool { return false }
	}
	return &Manager{
		cfg: cfg, log: log, ipam: ipam, plumber: plumber, node: node, bpf: bpf, ready: ready,
		store: store{dir: cfg.StateDir, log: log}, releaseWake: make(chan struct{}, 1),
	}
}

func validAttachment(att *datapathv1alpha1.Attachment) error {
	if att.GetContainerId() == "" || att.GetInterfaceName() == "" {
		return fmt.Errorf("%w: attachment needs container_id and interface_name", ErrInvalid)
	}
	// The kernel's dev_valid_name: "." and ".." are taken by sysfs, and
	// no '/', ':' or white space.
	name := att.GetInterfaceName()
	if len(name) > bounded.InterfaceName || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\v\f\r\x00") {
		return fmt.Errorf("%w: interface_name %s is not a valid Linux interface name", ErrInvalid, bounded.Quote(name))
	}
	if err := bounded.String("container_id", att.GetContainerId(), bounded.ContainerID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// HostName is the host-side veth name of an attachment.
func HostName(att *datapathv1alpha1.Attachment) string {
	return veth.HostName(att.GetContainerId(), att.GetInterfaceName())
}

// GetEndpoint returns a recorded endpoint.
func (m *Manager) GetEndpoint(att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error) {
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	_, ep, err := m.store.load(HostName(att))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, att.GetContainerId(), att.GetInterfaceName())
	}
	if err != nil {
		return nil, fmt.Errorf("endpoint record: %w", err)
	}
	return ep, nil
}

// ListEndpoints returns the recorded endpoints in host-name order.
func (m *Manager) ListEndpoints() ([]*datapathv1alpha1.Endpoint, error) {
	eps, err := m.store.list()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(eps))
	for n := range eps {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*datapathv1alpha1.Endpoint, 0, len(names))
	for _, n := range names {
		out = append(out, eps[n])
	}
	return out, nil
}

// ipamError turns an IPAM failure into the datapath's status, keeping the
// code and details so the CNI shim can map it (an exhausted pool is told by
// IPAM's ErrorInfo, not by the code alone).
func ipamError(op string, err error) error {
	st, _ := status.FromError(err)
	p := st.Proto()
	p.Message = fmt.Sprintf("%s: IPAM: %s", op, st.Message())
	return status.FromProto(p).Err()
}

// Addrs returns an endpoint's addresses with their prefix lengths.
func Addrs(ep *datapathv1alpha1.Endpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, ipc := range ep.GetIps() {
		if p, err := netip.ParsePrefix(ipc.GetAddress()); err == nil {
			out = append(out, p)
		}
	}
	return out
}
