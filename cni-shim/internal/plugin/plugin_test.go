package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/axon-cni/axon/cni-shim/internal/config"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// fakeDatapath records requests and answers with canned replies or errors.
type fakeDatapath struct {
	datapathv1alpha1.UnimplementedDatapathServiceServer
	mu        sync.Mutex
	err       error
	ready     datapathv1alpha1.ReadinessState
	problems  []*datapathv1alpha1.EndpointProblem
	lastAdd   *datapathv1alpha1.CreateEndpointRequest
	lastCheck *datapathv1alpha1.CheckEndpointRequest
	lastGC    *datapathv1alpha1.GarbageCollectEndpointsRequest
}

func (f *fakeDatapath) CreateEndpoint(_ context.Context, req *datapathv1alpha1.CreateEndpointRequest) (*datapathv1alpha1.CreateEndpointResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastAdd = req
	if f.err != nil {
		return nil, f.err
	}
	return &datapathv1alpha1.CreateEndpointResponse{Endpoint: &datapathv1alpha1.Endpoint{
		Attachment: req.GetAttachment(),
		Interfaces: []*datapathv1alpha1.Interface{
			{Name: "lxc0123456789ab", Mac: "02:00:00:00:00:01", Mtu: 1450},
			{Name: req.GetAttachment().GetInterfaceName(), Mac: "02:00:00:00:00:02", Sandbox: req.GetNetnsPath(), Mtu: 1450},
		},
		Ips: []*datapathv1alpha1.IPConfig{
			{Address: "10.0.1.7/32", Gateway: "10.0.1.1", InterfaceIndex: 1, Family: commonv1alpha1.IPFamily_IP_FAMILY_IPV4},
		},
		Routes: []*datapathv1alpha1.Route{
			{Destination: "10.0.1.1/32"},
			{Destination: "0.0.0.0/0", Gateway: "10.0.1.1"},
		},
		Mtu: 1450,
	}}, nil
}

func (f *fakeDatapath) DeleteEndpoint(context.Context, *datapathv1alpha1.DeleteEndpointRequest) (*datapathv1alpha1.DeleteEndpointResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &datapathv1alpha1.DeleteEndpointResponse{}, nil
}

func (f *fakeDatapath) CheckEndpoint(_ context.Context, req *datapathv1alpha1.CheckEndpointRequest) (*datapathv1alpha1.CheckEndpointResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastCheck = req
	if f.err != nil {
		return nil, f.err
	}
	return &datapathv1alpha1.CheckEndpointResponse{Healthy: len(f.problems) == 0, Problems: f.problems}, nil
}

func (f *fakeDatapath) GarbageCollectEndpoints(_ context.Context, req *datapathv1alpha1.GarbageCollectEndpointsRequest) (*datapathv1alpha1.GarbageCollectEndpointsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastGC = req
	return &datapathv1alpha1.GarbageCollectEndpointsResponse{}, f.err
}

func (f *fakeDatapath) CheckReady(context.Context, *datapathv1alpha1.CheckReadyRequest) (*datapathv1alpha1.CheckReadyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &datapathv1alpha1.CheckReadyResponse{Readiness: f.ready, Reasons: []string{"because"}}, nil
}

func (f *fakeDatapath) set(fn func(*fakeDatapath)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// startFake serves a fake datapath on a unix socket and returns it with the
// socket's path.
func startFake(t *testing.T) (*fakeDatapath, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeDatapath{ready: datapathv1alpha1.ReadinessState_READINESS_STATE_READY}
	srv := grpc.NewServer()
	datapathv1alpha1.RegisterDatapathServiceServer(srv, fake)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return fake, sock
}

func netConf(t *testing.T, version, sock string, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{"cniVersion": version, "name": "axon", "type": "axon-cni", "socket": sock}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return e.Code
}

func TestAddPrintsResultInEverySpecVersion(t *testing.T) {
	fake, sock := startFake(t)
	netns := "/proc/self/ns/net" // any network namespace stands in for the pod's here
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			var out bytes.Buffer
			p := &Plugin{Out: &out}
			err := p.Add(&skel.CmdArgs{
				ContainerID: "c1", IfName: "eth0", Netns: netns,
				Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1;OTHER=x",
				StdinData: netConf(t, v, sock, map[string]any{
					"mtu": 1400,
					"runtimeConfig": map[string]any{
						"ips":                               []string{"10.0.1.7/24"},
						"io.kubernetes.cri.pod-annotations": map[string]string{"ipam.axon.io/pool": "blue, green"},
					},
				}),
			})
			if err != nil {
				t.Fatalf("Add() = %v", err)
			}
			var res map[string]any
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("result %q: %v", out.String(), err)
			}
			if res["cniVersion"] != v {
				t.Errorf("cniVersion = %v, want %s", res["cniVersion"], v)
			}
			if !strings.Contains(out.String(), `"10.0.1.7/32"`) || !strings.Contains(out.String(), `"10.0.1.1"`) {
				t.Errorf("result lacks address or gateway: %s", out.String())
			}
			req := fake.lastAdd
			if req.GetPodName() != "web-0" || req.GetPodNamespace() != "default" || req.GetPodUid() != "u1" {
				t.Errorf("pod identity not passed: %v", req)
			}
			if got := fmt.Sprint(req.GetRequestedPools()); got != "[blue green]" {
				t.Errorf("requested pools = %s, want [blue green]", got)
			}
			if got := fmt.Sprint(req.GetRequestedIps()); got != "[10.0.1.7]" {
				t.Errorf("requested IPs = %s, want [10.0.1.7]", got)
			}
			if req.GetMtu() != 1400 || req.GetCniArgs()["OTHER"] != "x" {
				t.Errorf("mtu/args not passed: %v", req)
			}
		})
	}
}

func TestErrorsCarrySpecCodes(t *testing.T) {
	fake, sock := startFake(t)
	netns := "/proc/self/ns/net"
	missingSock := filepath.Join(t.TempDir(), "absent.sock")
	good := func(string) []byte { return netConf(t, "1.1.0", sock, nil) }
	withPrev := func(string) []byte {
		return netConf(t, "1.1.0", sock, map[string]any{"prevResult": map[string]any{
			"cniVersion": "1.1.0", "ips": []map[string]any{{"address": "10.0.1.7/32"}},
		}})
	}
	tests := []struct {
		name  string
		verb  func(*Plugin, *skel.CmdArgs) error
		args  skel.CmdArgs
		conf  func(string) []byte
		dpErr error
		want  uint
		// wantMsg is a part of the error's message, if set.
		wantMsg string
		wantOK  bool
	}{
		{name: "ADD malformed JSON", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte { return []byte("{") }, want: types.ErrDecodingFailure},
		{name: "ADD without container ID", verb: (*Plugin).Add, args: skel.CmdArgs{IfName: "eth0", Netns: netns}, conf: good, want: types.ErrInvalidEnvironmentVariables},
		{name: "ADD without netns", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: good, want: types.ErrInvalidEnvironmentVariables},
		{name: "ADD with vanished netns", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/nonexistent/netns"}, conf: good, want: types.ErrInvalidNetNS},
		{name: "ADD with a netns path that is no namespace", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: t.TempDir()}, conf: good, want: types.ErrInvalidNetNS},
		{name: "ADD with datapath down", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte { return netConf(t, "1.1.0", missingSock, nil) }, want: types.ErrTryAgainLater},
		{name: "ADD unknown pool", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: good, dpErr: status.Error(codes.NotFound, `pool "x" not found`), want: types.ErrInvalidNetworkConfig},
		{name: "ADD pool exhausted", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: good, dpErr: poolExhaustedErr(t, ipamErrorDomain), want: ErrAddressExhausted},
		{name: "ADD resource exhausted without IPAM's mark", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: good, dpErr: status.Error(codes.ResourceExhausted, "endpoint map full"), want: types.ErrInternal},
		{name: "ADD resource exhausted marked by another domain", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: good, dpErr: poolExhaustedErr(t, "example.com"), want: types.ErrInternal},
		{name: "ADD with annotations over gRPC's message limit", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte {
			// Sent on, gRPC would refuse it with its own RESOURCE_EXHAUSTED
			// before any handler runs; the shim says what is wrong instead.
			return netConf(t, "1.1.0", sock, map[string]any{"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"big": strings.Repeat("x", 6<<20)}}})
		}, want: types.ErrInvalidNetworkConfig, wantMsg: "annotations"},
		{name: "ADD with annotations one byte over Kubernetes' limit", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte {
			return netConf(t, "1.1.0", sock, map[string]any{"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"b": strings.Repeat("x", config.MaxPodAnnotationBytes)}}})
		}, want: types.ErrInvalidNetworkConfig, wantMsg: "annotations"},
		{name: "ADD with annotations at Kubernetes' limit", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte {
			return netConf(t, "1.1.0", sock, map[string]any{"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"b": strings.Repeat("x", config.MaxPodAnnotationBytes-1)}}})
		}, wantOK: true},
		{name: "DEL with annotations over Kubernetes' limit", verb: (*Plugin).Del, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: func(string) []byte {
			return netConf(t, "1.1.0", sock, map[string]any{"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"b": strings.Repeat("x", 6<<20)}}})
		}, wantOK: true},
		{name: "ADD unimplemented", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: good, dpErr: status.Error(codes.Unimplemented, "later"), want: types.ErrInternal},
		{name: "ADD bad requested IP", verb: (*Plugin).Add, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: netns}, conf: func(string) []byte {
			return netConf(t, "1.1.0", sock, map[string]any{"runtimeConfig": map[string]any{"ips": []string{"bogus"}}})
		}, want: types.ErrInvalidNetworkConfig},
		{name: "DEL unknown is success", verb: (*Plugin).Del, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: good, dpErr: status.Error(codes.NotFound, "no such endpoint"), wantOK: true},
		{name: "CHECK unknown container", verb: (*Plugin).Check, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: withPrev, dpErr: status.Error(codes.NotFound, "no such endpoint"), want: types.ErrUnknownContainer},
		{name: "CHECK with IPAM or datapath unavailable", verb: (*Plugin).Check, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: withPrev, dpErr: status.Error(codes.Unavailable, "IPAM down"), want: types.ErrTryAgainLater},
		{name: "CHECK without prevResult", verb: (*Plugin).Check, args: skel.CmdArgs{ContainerID: "c", IfName: "eth0"}, conf: good, want: types.ErrInvalidNetworkConfig},
		{name: "STATUS unreachable", verb: (*Plugin).Status, conf: func(string) []byte { return netConf(t, "1.1.0", missingSock, nil) }, want: types.ErrPluginNotAvailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake.set(func(f *fakeDatapath) { f.err = tt.dpErr })
			args := tt.args
			args.StdinData = tt.conf(sock)
			err := tt.verb(&Plugin{Out: &bytes.Buffer{}}, &args)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if err == nil {
				t.Fatal("got success, want an error")
			}
			if got := cniCode(t, err); got != tt.want {
				t.Errorf("code = %d (%.300v), want %d", got, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %.300q does not mention %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

// poolExhaustedErr is RESOURCE_EXHAUSTED with the exhausted-pool
// ErrorInfo of domain, as IPAM (domain ipamErrorDomain) gives it.
func poolExhaustedErr(t *testing.T, domain string) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "pool full").WithDetails(&errdetails.ErrorInfo{Reason: reasonPoolExhausted, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestDelWhileDatapathDownIsQueued(t *testing.T) {
	queue := filepath.Join(t.TempDir(), "queue")
	conf := netConf(t, "1.1.0", filepath.Join(t.TempDir(), "absent.sock"), map[string]any{"deleteQueue": queue})
	if err := (&Plugin{Out: &bytes.Buffer{}}).Del(&skel.CmdArgs{ContainerID: "ctr/1", IfName: "eth0", StdinData: conf}); err != nil {
		t.Fatalf("DEL with the datapath down = %v, want success (queued)", err)
	}
	entries, err := os.ReadDir(queue)
	if err != nil || len(entries) != 1 {
		t.Fatalf("queue holds %v, %v; want one entry", entries, err)
	}
	b, err := os.ReadFile(filepath.Join(queue, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	var q datapathv1alpha1.QueuedDelete
	if err := protojson.Unmarshal(b, &q); err != nil || q.GetContainerId() != "ctr/1" || q.GetInterfaceName() != "eth0" {
		t.Fatalf("queued %s (%v)", b, err)
	}
}

func TestCheckSendsPrevResultAndReportsProblems(t *testing.T) {
	fake, sock := startFake(t)
	prev := map[string]any{
		"cniVersion": "1.1.0",
		"interfaces": []map[string]any{{"name": "eth0", "sandbox": "/x"}},
		"ips":        []map[string]any{{"address": "10.0.1.7/32", "interface": 0}},
	}
	conf := netConf(t, "1.1.0", sock, map[string]any{"prevResult": prev})
	args := &skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/x", StdinData: conf}
	p := &Plugin{Out: &bytes.Buffer{}}
	if err := p.Check(args); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if got := fmt.Sprint(fake.lastCheck.GetExpectedAddresses()); got != "[10.0.1.7/32]" {
		t.Errorf("expected addresses = %s", got)
	}
	fake.set(func(f *fakeDatapath) {
		f.problems = []*datapathv1alpha1.EndpointProblem{{Component: datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ROUTE, Message: "default route missing"}}
	})
	err := p.Check(args)
	if err == nil || !strings.Contains(err.Error(), "not as created") {
		t.Fatalf("Check() = %v, want the problems reported", err)
	}
}

func TestGCAndStatus(t *testing.T) {
	fake, sock := startFake(t)
	p := &Plugin{Out: &bytes.Buffer{}}
	one := []map[string]string{{"containerID": "a", "ifname": "eth0"}}
	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  int // valid attachments sent; -1: refused
	}{
		{"spec key", map[string]any{"cni.dev/valid-attachments": one}, 1},
		{"early 1.1.0 key", map[string]any{"cni.dev/attachments": one}, 1},
		{"both keys (libcni)", map[string]any{"cni.dev/valid-attachments": one, "cni.dev/attachments": one}, 1},
		{"empty list: nothing is valid", map[string]any{"cni.dev/valid-attachments": []map[string]string{}}, 0},
		{"null list (libcni with no pods)", map[string]any{"cni.dev/valid-attachments": nil, "cni.dev/attachments": nil}, 0},
		// Read as empty, a missing list would remove every pod of the node.
		{"no list", nil, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.set(func(f *fakeDatapath) { f.lastGC = nil })
			err := p.GC(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", sock, tc.extra)})
			if tc.want < 0 {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || fake.lastGC != nil {
					t.Fatalf("GC() = %v (datapath called: %v), want error %d and no call", err, fake.lastGC != nil, types.ErrInvalidNetworkConfig)
				}
				return
			}
			if err != nil {
				t.Fatalf("GC() = %v", err)
			}
			v := fake.lastGC.GetValidAttachments()
			if len(v) != tc.want || (tc.want == 1 && (v[0].GetContainerId() != "a" || v[0].GetInterfaceName() != "eth0")) {
				t.Errorf("valid attachments = %v", v)
			}
			if fake.lastGC.GetNetwork() == "" {
				t.Error("GC request names no network")
			}
		})
	}
	for _, tt := range []struct {
		state datapathv1alpha1.ReadinessState
		want  uint
	}{
		{datapathv1alpha1.ReadinessState_READINESS_STATE_READY, 0},
		{datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED, types.ErrLimitedConnectivity},
		{datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY, types.ErrPluginNotAvailable},
	} {
		fake.set(func(f *fakeDatapath) { f.ready = tt.state })
		err := p.Status(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", sock, nil)})
		if tt.want == 0 {
			if err != nil {
				t.Errorf("%s: Status() = %v", tt.state, err)
			}
			continue
		}
		if got := cniCode(t, err); got != tt.want {
			t.Errorf("%s: code %d, want %d", tt.state, got, tt.want)
		}
	}
}
