package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
	"github.com/axon-cni/axon/services/ipam/client"
	"github.com/axon-cni/axon/services/ipam/server"
)

const (
	poolCIDR  = "10.0.0.0/8"
	blockBits = 26
	// casValueSize is the size of the value each raw CAS transaction puts,
	// about the size of the allocation record Axon writes.
	casValueSize = 256
)

// axonEnv is one IPAM replica (allocator + gRPC server on loopback TCP) on
// one etcd cluster.
type axonEnv struct {
	alloc *allocator.Allocator
	kv    *countingKV
	cli   *clientv3.Client
	addr  string
}

// startAxon starts an allocator on its own client of c, serves it over
// gRPC on 127.0.0.1, and creates the default pool.
func startAxon(t testing.TB, c *etcdtest.Cluster) *axonEnv {
	t.Helper()
	cli := c.Client(t)
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alloc, err := allocator.New(ctx, cli, allocator.DefaultConfig(), log)
	if err != nil {
		t.Fatalf("start allocator: %v", err)
	}
	t.Cleanup(alloc.Close)
	srv := grpc.NewServer()
	ipamv1alpha1.RegisterIPAMServiceServer(srv, server.New(alloc, server.NewMetrics(prometheus.NewRegistry(), alloc), log))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	if _, err := alloc.CreatePool(ctx, &ipamv1alpha1.Pool{
		Name: "default", Default: true,
		Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{poolCIDR}, BlockPrefixLength: blockBits},
	}); err != nil {
		t.Fatalf("create pool: %v", err)
	}
	return &axonEnv{alloc: alloc, kv: kv, cli: cli, addr: l.Addr().String()}
}

// nodeName is the name of simulated node i of the run id.
func nodeName(id string, i int) string { return fmt.Sprintf("%s-n%d", id, i) }

// registerNodes registers n nodes named nodeName(id, i), conc at a time.
func (e *axonEnv) registerNodes(ctx context.Context, id string, n, conc int) error {
	errs := make(chan error, conc)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range conc {
		go func() {
			for i := range next {
				addr := fmt.Sprintf("172.%d.%d.%d", 16+i>>16, (i>>8)&255, i&255)
				if _, err := e.alloc.CreateNode(ctx, &ipamv1alpha1.Node{Name: nodeName(id, i), Addresses: []string{addr}}); err != nil {
					errs <- fmt.Errorf("register node %s: %w", nodeName(id, i), err)
					for range next {
					}
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range conc {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// clients dials n gRPC connections to the server, one per simulated node,
// as each node's CNI plugin would have its own.
func (e *axonEnv) clients(t testing.TB, n int) []ipamv1alpha1.IPAMServiceClient {
	t.Helper()
	return dialClients(t, e.addr, n)
}

// dialClients opens n gRPC connections to addr, one per simulated client.
func dialClients(t testing.TB, addr string, n int) []ipamv1alpha1.IPAMServiceClient {
	t.Helper()
	out := make([]ipamv1alpha1.IPAMServiceClient, n)
	for i := range out {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		out[i] = ipamv1alpha1.NewIPAMServiceClient(conn)
	}
	return out
}

// allocRequest is a CNI ADD's request: an owner handle, the node and the
// pod, no explicit family (the pools decide, as for a plain pod).
func allocRequest(id, node string, w, i int) *ipamv1alpha1.AllocateIPRequest {
	return &ipamv1alpha1.AllocateIPRequest{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: fmt.Sprintf("%s-w%d-%d", id, w, i), InterfaceName: "eth0"},
		Node:   node,
		Pod:    &ipamv1alpha1.PodInfo{Namespace: "bench", Name: fmt.Sprintf("pod-%s-w%d-%d", id, w, i)},
	}
}

// measureAxon runs AllocateIP over gRPC with conc clients, each on its own
// freshly registered node.
func (e *axonEnv) measureAxon(t testing.TB, ctx context.Context, label, id string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	if err := e.registerNodes(ctx, id, conc, min(conc, 16)); err != nil {
		t.Fatal(err)
	}
	cls := e.clients(t, conc)
	return run(ctx, label, conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
		_, err := cls[w].AllocateIP(ctx, allocRequest(id, nodeName(id, w), w, i))
		return err
	})
}

// podsPerNode is kubelet's default max-pods: how many addresses a real node
// holds at most at once.
const podsPerNode = 110

// measureAxonRotating is measureAxon, except that each client moves on to
// another of its own nodes every podsPerNode allocations, so that no node
// holds more addresses than a real node would (two /26 blocks).
func (e *axonEnv) measureAxonRotating(t testing.TB, ctx context.Context, label, id string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	// Enough nodes for ~25,000 allocations per run; a client that uses
	// up its nodes starts over on its first one.
	perClient := max(4, 256/conc)
	if err := e.registerNodes(ctx, id, conc*perClient, 16); err != nil {
		t.Fatal(err)
	}
	cls := e.clients(t, conc)
	return run(ctx, label, conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
		node := nodeName(id, w*perClient+(i/podsPerNode)%perClient)
		_, err := cls[w].AllocateIP(ctx, allocRequest(id, node, w, i))
		return err
	})
}

// nodeBurstRate bounds the allocation rate measureAxonOneNode prepares
// nodes for; past it, clients start over on the first nodes.
const nodeBurstRate = 30000

// measureAxonOneNode runs conc clients as pods starting together on one
// node, as host-local's rows do: they call AllocateIP through the node
// agent's coalescing client (ipam/client) on the agent's one gRPC
// connection. Every podsPerNode allocations the node is full and all
// clients move on to the next, fresh node, which claims its blocks.
func (e *axonEnv) measureAxonOneNode(t testing.TB, ctx context.Context, label, id string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	nodes := int((warm+dur).Seconds()*nodeBurstRate)/podsPerNode + 1
	if err := e.registerNodes(ctx, id, nodes, 16); err != nil {
		t.Fatal(err)
	}
	agent := client.New(dialClients(t, e.addr, 1)[0])
	var seq atomic.Int64
	return run(ctx, label, conc, warm, dur, e.kv, func(ctx context.Context, w, i int) error {
		node := nodeName(id, int(seq.Add(1)-1)/podsPerNode%nodes)
		_, err := agent.AllocateIP(ctx, allocRequest(id, node, w, i))
		return err
	})
}

// measureCAS runs raw compare-and-swap transactions: each worker owns one
// key, reads it once, then loops Txn(If(ModRevision(key)==last)).Then(Put)
// taking last from the response header.
func measureCAS(t testing.TB, ctx context.Context, cli *clientv3.Client, label, tag string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	val := strings.Repeat("v", casValueSize)
	keys := make([]string, conc)
	last := make([]int64, conc)
	for w := range conc {
		keys[w] = fmt.Sprintf("/bench/cas/%s/w%d", tag, w)
		if _, err := cli.Put(ctx, keys[w], val); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, keys[w])
		if err != nil {
			t.Fatal(err)
		}
		last[w] = resp.Kvs[0].ModRevision
	}
	return run(ctx, label, conc, warm, dur, nil, func(ctx context.Context, w, _ int) error {
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(keys[w]), "=", last[w])).
			Then(clientv3.OpPut(keys[w], val)).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("CAS on %s lost (nobody else writes it)", keys[w])
		}
		last[w] = resp.Header.Revision
		return nil
	})
}

// hostLocalConf is the network configuration host-local reads on stdin.
func hostLocalConf(dataDir string) []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "bench",
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": poolCIDR}}},
			"dataDir": dataDir,
		},
	})
	return b
}

// measureHostLocal execs the host-local plugin once per allocation, as a
// container runtime does, and measures exec to exit.
func measureHostLocal(t testing.TB, ctx context.Context, bin string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	conf := hostLocalConf(t.TempDir())
	dir := filepath.Dir(bin)
	return run(ctx, "host-local", conc, warm, dur, nil, func(ctx context.Context, w, i int) error {
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = []string{
			"CNI_COMMAND=ADD",
			fmt.Sprintf("CNI_CONTAINERID=hl-c%d-w%d-%d", conc, w, i),
			"CNI_NETNS=/var/run/netns/bench",
			"CNI_IFNAME=eth0",
			"CNI_PATH=" + dir,
		}
		cmd.Stdin = bytes.NewReader(conf)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("host-local: %w: %s%s", err, out, stderr.Bytes())
		}
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
			return fmt.Errorf("host-local: unexpected result %q", out)
		}
		return nil
	})
}

// bareCAS is the least a gRPC-fronted allocator can do: AllocateIP over the
// same gRPC hop as Axon's, answered after one compare-and-swap transaction
// (create the handle's key) on its own etcd client, with no allocator
// behind it. Its rate is the ceiling of any design that puts a gRPC service
// in front of one durable transaction per allocation.
type bareCAS struct {
	ipamv1alpha1.UnimplementedIPAMServiceServer
	cli *clientv3.Client
	val string
}

func (s *bareCAS) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.AllocateIPResponse, error) {
	key := "/bench/bare/" + req.GetHandle().GetContainerId() + "/" + req.GetHandle().GetInterfaceName()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, s.val)).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("handle %s exists", key)
	}
	// An answer of the size of Axon's: one address with its gateway.
	return &ipamv1alpha1.AllocateIPResponse{Allocation: &ipamv1alpha1.Allocation{
		Handle: req.GetHandle(), Node: req.GetNode(), Sequence: uint64(resp.Header.Revision),
		Addresses: []*ipamv1alpha1.AllocatedAddress{{Ip: "10.0.0.2", Family: commonv1alpha1.IPFamily_IP_FAMILY_IPV4, PrefixLength: 32, Gateway: "10.0.0.1", Pool: "default", Block: "10.0.0.0/26"}},
	}}, nil
}

// startBareCAS serves bareCAS on 127.0.0.1 with its own client of c and
// returns its address.
func startBareCAS(t testing.TB, c *etcdtest.Cluster) string {
	t.Helper()
	srv := grpc.NewServer()
	ipamv1alpha1.RegisterIPAMServiceServer(srv, &bareCAS{cli: c.Client(t), val: strings.Repeat("v", casValueSize)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// measureBareCAS runs AllocateIP against bareCAS with conc clients, each on
// its own connection, as measureAxon does against Axon.
func measureBareCAS(t testing.TB, ctx context.Context, addr, tag string, conc int, warm, dur time.Duration) measurement {
	t.Helper()
	cls := dialClients(t, addr, conc)
	return run(ctx, "gRPC + one CAS", conc, warm, dur, nil, func(ctx context.Context, w, i int) error {
		_, err := cls[w].AllocateIP(ctx, allocRequest(tag, nodeName(tag, w), w, i))
		return err
	})
}
