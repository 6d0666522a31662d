package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// axonImpl is Axon's eBPF service load balancer on one node of a running
// cluster, programmed through the datapath's UpsertServices batch RPC.
type axonImpl struct {
	conn   *grpc.ClientConn
	client datapathv1alpha1.DatapathServiceClient
	pinDir string // the node's pinned maps
}

// newAxonImpl connects to a node's datapath socket; pinDir is where the
// node pins its maps.
func newAxonImpl(socket, pinDir string) (*axonImpl, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("datapath client: %w", err)
	}
	return &axonImpl{conn: conn, client: datapathv1alpha1.NewDatapathServiceClient(conn), pinDir: pinDir}, nil
}

func (a *axonImpl) close() error { return a.conn.Close() }

// labelAxon names Axon's load balancer in the report.
const labelAxon = "Axon (eBPF)"

func (a *axonImpl) name() string                      { return labelAxon }
func (a *axonImpl) target(svc svcSpec) netip.AddrPort { return svc.frontend() }

func toService(s svcSpec) *datapathv1alpha1.Service {
	out := &datapathv1alpha1.Service{
		Frontend: &datapathv1alpha1.Frontend{Address: s.VIP.String(), Port: svcPort, Protocol: commonv1alpha1.Protocol_PROTOCOL_TCP},
		Type:     datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
	}
	out.ServiceNamespace, out.ServiceName, _ = strings.Cut(s.Name, "/")
	for _, b := range s.Backends {
		out.Backends = append(out.Backends, &datapathv1alpha1.Backend{Address: b.Addr().String(), Port: uint32(b.Port())})
	}
	return out
}

// upsert sends one UpsertServices call; Unimplemented (the load balancer
// has not landed in this build) is errNotAvailable.
func (a *axonImpl) upsert(ctx context.Context, req *datapathv1alpha1.UpsertServicesRequest) (time.Duration, error) {
	t0 := time.Now()
	_, err := a.client.UpsertServices(ctx, req)
	d := time.Since(t0)
	if status.Code(err) == codes.Unimplemented {
		return 0, fmt.Errorf("UpsertServices answers Unimplemented: %w", errNotAvailable)
	}
	if err != nil {
		return 0, fmt.Errorf("UpsertServices (%d services): %w", len(req.GetServices()), err)
	}
	return d, nil
}

// program makes svcs the node's services: one UpsertServices call with
// replace_all, as a client's full resync (axon-datapath takes requests up
// to 64 MiB; 100k services are about 11 MiB).
func (a *axonImpl) program(ctx context.Context, svcs []svcSpec) (time.Duration, error) {
	req := &datapathv1alpha1.UpsertServicesRequest{ReplaceAll: true, Services: make([]*datapathv1alpha1.Service, 0, len(svcs))}
	for _, s := range svcs {
		req.Services = append(req.Services, toService(s))
	}
	return a.upsert(ctx, req)
}

func (a *axonImpl) addOne(ctx context.Context, svc svcSpec) (time.Duration, error) {
	return a.upsert(ctx, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{toService(svc)}})
}

// memory lists the node's pinned maps with their locked memory (the
// service and connection-tracking maps among them; the report sums
// all).
func (a *axonImpl) memory(context.Context) (memUsage, error) {
	var u memUsage
	err := filepath.WalkDir(a.pinDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil // a pinned program or link
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			return fmt.Errorf("map %s: %w", path, err)
		}
		mem, _ := info.Memlock()
		u.Maps = append(u.Maps, mapMem{Name: info.Name, MaxEntries: info.MaxEntries, Memlock: mem})
		return nil
	})
	if err != nil {
		return memUsage{}, fmt.Errorf("maps under %s: %w", a.pinDir, err)
	}
	slices.SortFunc(u.Maps, func(x, y mapMem) int { return int(int64(y.Memlock) - int64(x.Memlock)) })
	return u, nil
}

// teardown removes every service (an empty replace_all).
func (a *axonImpl) teardown(ctx context.Context) error {
	_, err := a.upsert(ctx, &datapathv1alpha1.UpsertServicesRequest{ReplaceAll: true})
	if errors.Is(err, errNotAvailable) {
		return nil
	}
	return err
}

// axonLookupCost is the per-packet cost of Axon's service path at a size:
// bpf/datapath's BenchmarkLB (BPF_PROG_TEST_RUN of axon_from_pod with size
// services in its maps), the median ns/op of a packet of an established
// connection through a frontend less that of a plain pod-to-pod packet on
// a node without services. It covers the frontend lookup, the connection
// tracker's and the address rewrite.
func axonLookupCost(size int) (float64, error) {
	root, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil || strings.TrimSpace(string(root)) == "" {
		return 0, fmt.Errorf("find go.work: %v", err)
	}
	cmd := exec.Command("go", "test", "-run", "^$", "-count", "5", "-benchtime", "200000x",
		"-bench", fmt.Sprintf("^BenchmarkLB$/^(no-lb|services=%d)$/^(pod|established)$", size), "./datapath")
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), "bpf")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("BenchmarkLB failed (%v); run it in bpf/ to see why", err)
	}
	runs := map[string][]float64{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "ns/op" {
			continue
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(f[0], "-"+strconv.Itoa(runtime.GOMAXPROCS(0)))
		runs[name] = append(runs[name], v)
	}
	base, svc := runs["BenchmarkLB/no-lb/pod"], runs[fmt.Sprintf("BenchmarkLB/services=%d/established", size)]
	if len(base) == 0 || len(svc) == 0 {
		return 0, fmt.Errorf("BenchmarkLB printed no result for %d services", size)
	}
	return medianF(svc) - medianF(base), nil
}
