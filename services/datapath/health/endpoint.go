package health

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// The health endpoint (as Cilium's): a network namespace of the node's own,
// wired exactly like a pod through CreateEndpoint, whose address peers
// probe. An answer proves the pod path end to end — the node's pod veth,
// axon_from_pod, the maps, the overlay or native routes — not just that the
// agent runs: the kernel in that namespace answers ICMP echo, so probes
// keep succeeding while the agent restarts, as pod traffic does.

// Network is the CNI network name the health endpoint is recorded under; a
// CNI GC of any other network leaves it alone.
const Network = "axon-health"

// ContainerID is the container ID of a node's health endpoint, also its
// IPAM owner handle (with interface eth0), by which peers find its address.
func ContainerID(node string) string { return "axon-health-" + node }

// Attachment is a node's health endpoint's attachment.
func Attachment(node string) *datapathv1alpha1.Attachment {
	return &datapathv1alpha1.Attachment{ContainerId: ContainerID(node), InterfaceName: "eth0"}
}

// NetnsPath is where the agent keeps its health endpoint's network
// namespace: a bind mount in the state directory, which outlives the agent.
func NetnsPath(stateDir string) string { return filepath.Join(stateDir, "health.netns") }

// IsEndpoint reports whether att is node's health endpoint.
func IsEndpoint(node string, att *datapathv1alpha1.Attachment) bool {
	return att.GetContainerId() == ContainerID(node) && att.GetInterfaceName() == "eth0"
}

// Endpoints is the endpoint lifecycle the health endpoint goes through, as
// a pod's does (endpoint.Manager).
type Endpoints interface {
	CreateEndpoint(ctx context.Context, req *datapathv1alpha1.CreateEndpointRequest) (*datapathv1alpha1.Endpoint, error)
	DeleteEndpoint(ctx context.Context, att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error)
	// GetEndpoint fails when the endpoint has no record.
	GetEndpoint(att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error)
}

// Links finds the node's links (an nl.Handle in the node's namespace).
type Links interface {
	LinkByName(name string) (netlink.Link, error)
}

// Endpoint keeps a node's health endpoint in place.
type Endpoint struct {
	node, stateDir string
	ns             nl.Namespaces
	links          Links
	eps            Endpoints
}

// NewEndpoint returns the keeper of node's health endpoint, whose namespace
// lives in stateDir.
func NewEndpoint(node, stateDir string, ns nl.Namespaces, links Links, eps Endpoints) *Endpoint {
	return &Endpoint{node: node, stateDir: stateDir, ns: ns, links: links, eps: eps}
}

// ensure creates the health endpoint unless it exists: its namespace, then
// the endpoint (idempotent, like a repeated CNI ADD).
func (e *Endpoint) ensure(ctx context.Context) error {
	path := NetnsPath(e.stateDir)
	if err := e.ns.Ensure(path); err != nil {
		return fmt.Errorf("health endpoint namespace: %w", err)
	}
	_, err := e.eps.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{
		Attachment: Attachment(e.node), NetnsPath: path,
		PodNamespace: "axon-system", PodName: "axon-health-" + e.node, Network: Network,
	})
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	return nil
}

// Keep makes sure the health endpoint is in place: created if missing, and
// re-created if its veth went away (its namespace was removed, say).
func (e *Endpoint) Keep(ctx context.Context) error {
	att := Attachment(e.node)
	_, rerr := e.eps.GetEndpoint(att)
	name := veth.HostName(att.GetContainerId(), att.GetInterfaceName())
	_, lerr := e.links.LinkByName(name)
	// Only "not found" means the veth is gone; another error says nothing
	// about it, and rebuilding would give up the endpoint's address.
	var nf netlink.LinkNotFoundError
	if lerr != nil && !errors.As(lerr, &nf) {
		return fmt.Errorf("look up the health endpoint's veth %s: %w", name, lerr)
	}
	if rerr == nil && lerr == nil {
		return nil
	}
	if rerr == nil || lerr == nil {
		// Half of it (a record without its veth, or a veth without its
		// record after a crash): remove what is left, then create anew.
		if _, err := e.eps.DeleteEndpoint(ctx, att); err != nil {
			return fmt.Errorf("remove the broken health endpoint: %w", err)
		}
	}
	return e.ensure(ctx)
}

// RemoveNetns unmounts and removes the health endpoint's namespace handle in
// stateDir: what tears a node down for good (a test, a decommissioned node)
// does after stopping the agent. A missing handle is success.
func RemoveNetns(stateDir string) error { return nl.RemoveBindMount(NetnsPath(stateDir)) }
