package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// The health endpoint (as Cilium's): a network namespace of the node's own,
// wired exactly like a pod through CreateEndpoint, whose address peers
// probe. An answer proves the pod path end to end — the node's pod veth,
// axon_from_pod, the maps, the overlay or native routes — not just that the
// agent runs: the kernel in that namespace answers ICMP echo, so probes
// keep succeeding while the agent restarts, as pod traffic does.

// HealthNetwork is the CNI network name the health endpoint is recorded
// under; a CNI GC of any other network leaves it alone.
const HealthNetwork = "axon-health"

// HealthContainerID is the container ID of a node's health endpoint, also
// its IPAM owner handle (with interface eth0), by which peers find its
// address.
func HealthContainerID(node string) string { return "axon-health-" + node }

func healthAttachment(node string) *datapathv1alpha1.Attachment {
	return &datapathv1alpha1.Attachment{ContainerId: HealthContainerID(node), InterfaceName: "eth0"}
}

// HealthNetnsPath is where the agent keeps its health endpoint's network
// namespace: a bind mount in the state directory, which outlives the agent.
func HealthNetnsPath(stateDir string) string { return filepath.Join(stateDir, "health.netns") }

// isHealthEndpoint reports whether att is this node's health endpoint.
func (a *Agent) isHealthEndpoint(att *datapathv1alpha1.Attachment) bool {
	return att.GetContainerId() == HealthContainerID(a.cfg.NodeName) && att.GetInterfaceName() == "eth0"
}

// ensureHealthEndpoint creates the health endpoint unless it exists: its
// namespace, then the endpoint (idempotent, like a repeated CNI ADD).
func (a *Agent) ensureHealthEndpoint(ctx context.Context) error {
	path := HealthNetnsPath(a.cfg.StateDir)
	if err := ensureNetns(path); err != nil {
		return fmt.Errorf("health endpoint namespace: %w", err)
	}
	_, err := a.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{
		Attachment: healthAttachment(a.cfg.NodeName), NetnsPath: path,
		PodNamespace: "axon-system", PodName: "axon-health-" + a.cfg.NodeName, Network: HealthNetwork,
	})
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	return nil
}

// keepHealthEndpoint makes sure the health endpoint is in place: created
// if missing, and re-created if its veth went away (its namespace was
// removed, say).
func (a *Agent) keepHealthEndpoint(ctx context.Context) error {
	att := healthAttachment(a.cfg.NodeName)
	name := hostNameOf(att)
	_, _, rerr := a.store.load(name)
	_, lerr := a.plumber.Node.LinkByName(name)
	if rerr == nil && lerr == nil {
		return nil
	}
	if rerr == nil || lerr == nil {
		// Half of it (a record without its veth, or a veth without its
		// record after a crash): remove what is left, then create anew.
		if _, err := a.DeleteEndpoint(ctx, att); err != nil {
			return fmt.Errorf("remove the broken health endpoint: %w", err)
		}
	}
	return a.ensureHealthEndpoint(ctx)
}

// peerHealthIP asks IPAM for the IPv4 address of a peer's health endpoint.
func (a *Agent) peerHealthIP(ctx context.Context, node string) (netip.Addr, error) {
	resp, err := a.ipam.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: HealthContainerID(node), InterfaceName: "eth0"},
	}})
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ad := range resp.GetAllocation().GetAddresses() {
		if ip, err := netip.ParseAddr(ad.GetIp()); err == nil && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("health endpoint has no IPv4 address")
}

// ensureNetns makes path a handle of a network namespace of its own (a
// bind mount of one, as `ip netns add` makes under /run/netns), unless it
// is one already.
func ensureNetns(path string) error {
	if isNetns(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return err
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		// A thread that cannot return to its namespace stays locked, so
		// the runtime discards it with this goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, serr)
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("bind-mount the namespace on %s: %w", path, err)
		}
		errc <- err
	}()
	return <-errc
}

// isNetns reports whether path is a network namespace handle.
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// RemoveHealthNetns unmounts and removes a health endpoint's namespace
// handle: what tears a node down for good (a test, a decommissioned node)
// does after stopping the agent. A missing handle is success.
func RemoveHealthNetns(stateDir string) error {
	path := HealthNetnsPath(stateDir)
	if isNetns(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
