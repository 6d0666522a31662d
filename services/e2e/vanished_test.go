package e2e

import (
	"fmt"
	"strings"
	"testing"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
)

// TestVanishedVethReleased deletes a pod's host veth behind the datapath's
// back (`ip link del`, as if its DEL went elsewhere): the running agent
// notices the link's deletion and removes the endpoint at once — map
// entries, IPAM allocation — rather than at its next restart. The host route
// to the pod goes with the link, in the kernel.
func TestVanishedVethReleased(t *testing.T) {
	e := newEnv(t, 1)
	a, b := e.addPod(0, "pod-a"), e.addPod(0, "pod-b")
	e.ping(a.netns, b.ip)
	node := e.cluster.Nodes[0].Netns
	veths := lxcLinks(node)
	if len(veths) != 2 {
		t.Fatalf("pod veths %v, want two", veths)
	}
	// Delete pod-a's: the one whose peer is in pod-a's namespace.
	var gone string
	peer := linkIn(t, a.netns, "eth0").Attrs().ParentIndex
	for _, v := range veths {
		if linkIn(t, node, v).Attrs().Index == peer {
			gone = v
		}
	}
	if gone == "" {
		t.Fatalf("no veth of %v is pod-a's", veths)
	}
	if out, err := run(node, "ip", "link", "del", gone); err != nil {
		t.Fatalf("ip link del %s: %v %s", gone, err, out)
	}
	// Well before the periodic pass (30 s): the link event does it.
	e.eventually(func() error {
		if allocs := e.pods(0); len(allocs) != 1 || allocs[0].GetHandle().GetContainerId() != b.rt.ContainerID {
			return fmt.Errorf("IPAM allocations %v, want pod-b's only", allocs)
		}
		return nil
	})
	eps := e.endpointEntries(0)
	if eps[a.ip] || !eps[b.ip] {
		t.Errorf("eBPF endpoint entries %v: want pod-a's (%s) gone, pod-b's (%s) kept", eps, a.ip, b.ip)
	}
	for _, p := range []struct {
		pod  *pod
		want bool
	}{{a, false}, {b, true}} {
		out, err := run(node, "ip", "-4", "route", "show", "exact", p.pod.ip+"/32")
		if err != nil {
			t.Fatalf("ip route show: %v %s", err, out)
		}
		if got := strings.TrimSpace(out) != ""; got != p.want {
			t.Errorf("host route to %s (%s) present = %t, want %t: %q", p.pod.name, p.pod.ip, got, p.want, out)
		}
	}
	e.ping(b.netns, e.cluster.Nodes[0].IP.String())
	// The runtime's DEL, should it come after all, finds nothing to do.
	e.delPod(a)
	e.delPod(b)
	e.assertNothingLeft(0)
}

// endpointEntries lists the addresses of a node's eBPF endpoint entries.
func (e *env) endpointEntries(node int) map[string]bool {
	e.t.Helper()
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+e.cluster.Nodes[node].Name, bpfdp.LoadOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer objs.Close()
	eps, err := objs.Endpoints()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]bool{}
	for ip := range eps {
		out[ip.String()] = true
	}
	return out
}
