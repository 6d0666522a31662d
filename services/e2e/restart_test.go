package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// echoConn opens a TCP connection from pod a to an echo server in pod b.
func echoConn(t *testing.T, a, b *pod) (net.Conn, *bufio.Reader) {
	t.Helper()
	var l net.Listener
	if err := nstest.DoAt(b.netns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(b.ip, "7777"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	if err := nstest.DoAt(a.netns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(b.ip, "7777"), 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo of %q = %q, %v", msg, got, err)
	}
}

// TestRestartKeepsConnections kills a node's datapath while its pods hold
// TCP connections, to a pod on the same node and to one on another node
// (through the tunnel): traffic keeps flowing on the pinned programs and
// maps, a DEL made meanwhile is queued and replayed, and the restarted
// agent knows every endpoint.
func TestRestartKeepsConnections(t *testing.T) {
	e := newEnv(t, 2)
	conf := e.conflist(0)
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(0, "pod-c")
	remote := e.addPod(1, "pod-remote")
	e.eventually(func() error { return e.tryPing(a.netns, remote.ip) })
	conn, r := echoConn(t, a, b)
	roundTrip(t, conn, r, "before")
	rconn, rr := echoConn(t, a, remote)
	roundTrip(t, rconn, rr, "before, across nodes")

	e.cluster.KillDatapath(0)
	killed := time.Now()
	roundTrip(t, conn, r, "while the datapath is down")
	roundTrip(t, rconn, rr, "across nodes while the datapath is down")
	// Node-1's health endpoint is a namespace the kernel answers in: node-2
	// still reaches it through the datapath while node-1's agent is down.
	e.eventually(func() error {
		st, err := e.nodeStatus(1)
		if err != nil {
			return err
		}
		for _, p := range st.GetPeers() {
			if p.GetNodeName() == "node-1" && p.GetLastProbeTime().AsTime().After(killed) {
				if !p.GetHealthEndpointReachable() {
					return fmt.Errorf("node-2 sees node-1's health endpoint unreachable while its agent is down: %v", p)
				}
				return nil
			}
		}
		return fmt.Errorf("node-2 has not probed node-1 since the kill: %v", st.GetPeers())
	})
	if err := e.cni.GetStatusNetworkList(t.Context(), conf); err == nil {
		t.Error("CNI STATUS reports ready while the datapath is down")
	}
	e.delPod(c) // queued
	if entries, _ := os.ReadDir(e.cluster.Nodes[0].DeleteQueue); len(entries) != 1 {
		t.Fatalf("delete queue holds %d entries, want 1", len(entries))
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.cluster.StartDatapath(ctx, 0); err != nil {
		t.Fatalf("restart datapath: %v", err)
	}
	before := e.stats(0)
	roundTrip(t, conn, r, "after the restart")
	roundTrip(t, rconn, rr, "across nodes after the restart")
	after := e.stats(0)
	for _, name := range []string{"forwarded-local", "forwarded-tunnel", "from-overlay-local"} {
		if after[name] <= before[name] {
			t.Errorf("%s %d -> %d: the restarted programs do not forward", name, before[name], after[name])
		}
	}
	e.eventually(func() error {
		if l := lxcLinks(e.cluster.Nodes[0].Netns); len(l) != 2 {
			return fmt.Errorf("node has veths %v, want pod-a's and pod-b's (pod-c's queued DEL replayed)", l)
		}
		return nil
	})
	for _, p := range []*pod{a, b} {
		if err := e.cni.CheckNetworkList(t.Context(), conf, p.rt); err != nil {
			t.Errorf("CHECK %s after restart: %v", p.name, err)
		}
	}
}

// TestRestartReconciles changes a node while its datapath is down, as a
// runtime or a crash would, and checks the restarted agent brings every
// layer back in line: a pod whose namespace was deleted is removed (veth,
// map entries, IPAM allocation), an endpoint map entry and a pod veth of
// no endpoint are dropped (and the addresses of an endpoint whose record
// is lost released), and a remote node given by API survives the
// restart and can still be removed.
func TestRestartReconciles(t *testing.T) {
	e := newEnvMode(t, 2, "tunnel")
	n := e.cluster.Nodes[0]
	a, gone, unrecorded := e.addPod(0, "pod-a"), e.addPod(0, "pod-gone"), e.addPod(0, "pod-unrecorded")
	b := e.addPod(1, "pod-b")
	e.eventually(func() error { return e.tryPing(a.netns, b.ip) })
	conn, err := grpc.NewClient("unix://"+n.DatapathSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	dp := datapathv1alpha1.NewDatapathServiceClient(conn)
	ghost := &datapathv1alpha1.RemoteNode{Name: "ghost", NodeIps: []string{e.cluster.Outside.IP.String()}, PodCidrs: []string{"10.99.0.0/24"}}
	if _, err := dp.UpsertRemoteNode(t.Context(), &datapathv1alpha1.UpsertRemoteNodeRequest{Node: ghost}); err != nil {
		t.Fatal(err)
	}

	e.cluster.KillDatapath(0)
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(gone.netns)).CombinedOutput(); err != nil {
		t.Fatalf("delete pod-gone's namespace: %v %s", err, out)
	}
	stale := netip.MustParseAddr("10.44.255.77")
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+n.Name, bpfdp.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = objs.PutEndpoint(stale, bpfdp.Endpoint{Ifindex: 4242, ID: 4242, PodMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}})
	_ = objs.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A veth named like a pod's but without Axon's program (another CNI's)
	// is left alone.
	if out, err := run(n.Netns, "ip", "link", "add", "lxc0123456789ab", "type", "veth", "peer", "name", "stray0"); err != nil {
		t.Fatalf("add a stray pod veth: %v %s", err, out)
	}
	// An endpoint whose record is lost (a crash before it was written):
	// its veth carries Axon's program, so it is Axon's and goes.
	hostU := veth.HostName(unrecorded.rt.ContainerID, unrecorded.rt.IfName)
	if err := os.Remove(filepath.Join(e.stateDir, n.Name, "endpoints", hostU+".json")); err != nil {
		t.Fatal(err)
	}
	// pod-a's record is an earlier version's, without a pod key.
	recA := filepath.Join(e.stateDir, n.Name, "endpoints", veth.HostName(a.rt.ContainerID, a.rt.IfName)+".json")
	dropPodKey(t, recA)
	// Pins lost while the veths survived: pod-a's map entries are gone.
	objs, err = bpfdp.Load("/sys/fs/bpf/"+e.prefix+n.Name, bpfdp.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{a.ip, a.ip6} {
		err = errors.Join(err, objs.DeleteEndpoint(netip.MustParseAddr(ip)))
	}
	_ = objs.Close()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.cluster.StartDatapath(ctx, 0); err != nil {
		t.Fatalf("restart datapath: %v", err)
	}
	e.eventually(func() error {
		if l := lxcLinks(n.Netns); len(l) != 2 || !slices.Contains(l, veth.HostName(a.rt.ContainerID, a.rt.IfName)) || !slices.Contains(l, "lxc0123456789ab") {
			return fmt.Errorf("node has veths %v, want pod-a's and the foreign one", l)
		}
		return nil
	})
	// pod-a's eBPF state is back: it reaches a pod on the other node.
	e.ping(a.netns, b.ip)
	if err := e.cni.CheckNetworkList(t.Context(), e.conflist(0), a.rt); err != nil {
		t.Errorf("CHECK pod-a after the restart: %v", err)
	}
	objs, err = bpfdp.Load("/sys/fs/bpf/"+e.prefix+n.Name, bpfdp.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eps, err := objs.Endpoints()
	_ = objs.Close()
	if err != nil {
		t.Fatal(err)
	}
	healthIPs := e.healthAddrs(0)
	// pod-a got a key of its own again, recorded, not the health endpoint's.
	keyA := devicePodKey(t, e, 0, veth.HostName(a.rt.ContainerID, a.rt.IfName))
	keyH := devicePodKey(t, e, 0, veth.HostName(health.ContainerID(n.Name), "eth0"))
	if keyA == 0 || keyA == keyH {
		t.Errorf("pod keys after restart: pod-a %d, health endpoint %d; want distinct, not 0", keyA, keyH)
	}
	var rec struct {
		PodKey uint32 `json:"podKey"`
	}
	if raw, err := os.ReadFile(recA); err != nil || json.Unmarshal(raw, &rec) != nil || rec.PodKey != keyA {
		t.Errorf("pod-a's record has pod key %d (%v); want %d", rec.PodKey, err, keyA)
	}
	for ip := range eps {
		if ip.String() != a.ip && ip.String() != a.ip6 && !healthIPs[ip] {
			t.Errorf("endpoint map entry %s left (pod-a has %s, %s)", ip, a.ip, a.ip6)
		}
	}
	list, err := dp.ListEndpoints(t.Context(), &datapathv1alpha1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 2 { // pod-a and the health endpoint
		t.Errorf("endpoints after restart: %v, %v; want pod-a's and the health endpoint", list.GetEndpoints(), err)
	}
	// pod-unrecorded's addresses have no endpoint any more: released at
	// start-up; pod-gone's by the release worker, moments after.
	e.eventually(func() error {
		if allocs := e.pods(0); len(allocs) != 1 || allocs[0].GetHandle().GetContainerId() != a.rt.ContainerID {
			return fmt.Errorf("IPAM allocations on %s: %v; want pod-a's only", n.Name, allocs)
		}
		return nil
	})

	remotes, err := dp.ListRemoteNodes(t.Context(), &datapathv1alpha1.ListRemoteNodesRequest{})
	if err != nil || !slices.ContainsFunc(remotes.GetNodes(), func(r *datapathv1alpha1.RemoteNode) bool { return r.GetName() == "ghost" }) {
		t.Fatalf("remote nodes after restart: %v, %v; want ghost kept", remotes.GetNodes(), err)
	}
	if out, _ := run(n.Netns, "ip", "route", "show", "10.99.0.0/24"); out == "" {
		t.Error("ghost's block is not routed after the restart")
	}
	if _, err := dp.DeleteRemoteNode(t.Context(), &datapathv1alpha1.DeleteRemoteNodeRequest{Name: "ghost"}); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(n.Netns, "ip", "route", "show", "10.99.0.0/24"); out != "" {
		t.Errorf("ghost's route left after DeleteRemoteNode: %s", out)
	}
	e.delPod(a)
	e.delPod(gone) // DEL of what the restart removed is success
	e.delPod(unrecorded)
	e.delPod(b)
	if _, err := run(n.Netns, "ip", "link", "del", "lxc0123456789ab"); err != nil {
		t.Fatal(err)
	}
}

// dropPodKey rewrites an endpoint record as an earlier version wrote it,
// without the pod key.
func dropPodKey(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec["podKey"]; !ok {
		t.Fatalf("record %s has no podKey: %s", path, raw)
	}
	delete(rec, "podKey")
	if raw, err = json.Marshal(rec); err == nil {
		err = os.WriteFile(path, raw, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// devicePodKey returns the pod key in node's device map for its host-side
// veth hostName.
func devicePodKey(t *testing.T, e *env, node int, hostName string) uint32 {
	t.Helper()
	n := e.cluster.Nodes[node]
	idx := linkIn(t, n.Netns, hostName).Attrs().Index
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+n.Name, bpfdp.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	key, err := objs.Device(idx)
	if err != nil {
		t.Fatalf("device entry of %s: %v", hostName, err)
	}
	return key
}

// TestKillDuringAddsLeavesNothingAllocated is issue item 4: the datapath is
// killed while 20 ADDs run in parallel, at a moment when IPAM has answered
// an ADD whose endpoint is not recorded yet. After the restart the node's
// allocations are exactly its endpoints', and once the runtime deletes
// every pod (as it would, after the failed ADDs) nothing is left.
func TestKillDuringAddsLeavesNothingAllocated(t *testing.T) {
	e := newEnvMode(t, 1, "tunnel")
	n := e.cluster.Nodes[0]
	recordsDir := filepath.Join(e.stateDir, n.Name, "endpoints")
	healthRecord := veth.HostName(health.ContainerID(n.Name), "eth0") + ".json"
	// recorded counts the endpoint records of pods.
	recorded := func() int {
		files, _ := filepath.Glob(filepath.Join(recordsDir, "lxc*.json"))
		return len(slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == healthRecord }))
	}
	const adds = 20
	pods := make([]*pod, adds)
	var wg sync.WaitGroup
	for i := range adds {
		name := fmt.Sprintf("burst-%d", i)
		// The pod as the runtime knows it, whether its ADD succeeds or not.
		pods[i] = &pod{name: name, netns: "/var/run/netns/" + e.prefix + name, node: 0, conf: e.conflist(0),
			rt: &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: "/var/run/netns/" + e.prefix + name, IfName: "eth0"}}
		wg.Go(func() { _, _ = e.tryAddPod(0, name) })
	}
	burstOver := make(chan struct{})
	go func() { wg.Wait(); close(burstOver) }()
	// Kill while IPAM has answered an ADD whose endpoint is not recorded
	// yet, or at the burst's end if no such moment is seen (the checks
	// below hold either way). No sleep: the window is short.
	cut := false
	for !cut {
		select {
		case <-burstOver:
			cut = true
			continue
		default:
		}
		cut = len(e.pods(0)) > recorded()
	}
	e.cluster.KillDatapath(0)
	wg.Wait()
	t.Logf("after the kill: %d allocations, %d endpoint records", len(e.pods(0)), recorded())

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.cluster.StartDatapath(ctx, 0); err != nil {
		t.Fatalf("restart datapath: %v", err)
	}
	conn, err := grpc.NewClient("unix://"+n.DatapathSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	list, err := datapathv1alpha1.NewDatapathServiceClient(conn).ListEndpoints(t.Context(), &datapathv1alpha1.ListEndpointsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	endpoints := map[string]bool{}
	for _, ep := range list.GetEndpoints() {
		if ep.GetAttachment().GetContainerId() != health.ContainerID(n.Name) {
			endpoints[ep.GetAttachment().GetContainerId()] = true
		}
	}
	allocated := map[string]bool{}
	for _, a := range e.pods(0) {
		allocated[a.GetHandle().GetContainerId()] = true
	}
	if !maps.Equal(allocated, endpoints) {
		t.Errorf("after the restart: allocations of %v, endpoints of %v; want the same pods", slices.Sorted(maps.Keys(allocated)), slices.Sorted(maps.Keys(endpoints)))
	}
	for _, p := range pods {
		if err := e.tryDelPod(p); err != nil {
			t.Error(err)
		}
	}
	e.assertNothingLeft(0)
}
