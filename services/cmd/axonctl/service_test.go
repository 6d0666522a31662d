package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// pagedServices serves ListServices one service per page.
type pagedServices struct {
	datapathv1alpha1.UnimplementedDatapathServiceServer
	services []*datapathv1alpha1.Service
}

func (p *pagedServices) ListServices(_ context.Context, req *datapathv1alpha1.ListServicesRequest) (*datapathv1alpha1.ListServicesResponse, error) {
	i := 0
	if req.GetPageToken() != "" {
		i, _ = strconv.Atoi(req.GetPageToken())
	}
	resp := &datapathv1alpha1.ListServicesResponse{Services: p.services[i : i+1]}
	if i+1 < len(p.services) {
		resp.NextPageToken = strconv.Itoa(i + 1)
	}
	return resp, nil
}

func serveServices(t *testing.T, svcs []*datapathv1alpha1.Service) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	datapathv1alpha1.RegisterDatapathServiceServer(srv, &pagedServices{services: svcs})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// TestServiceList checks the table (every page, a line per backend, its
// state) and the JSON output.
func TestServiceList(t *testing.T) {
	udp := commonv1alpha1.Protocol_PROTOCOL_UDP
	target := serveServices(t, []*datapathv1alpha1.Service{
		{
			Id: 1, Frontend: &datapathv1alpha1.Frontend{Address: "10.96.0.10", Port: 53, Protocol: udp},
			Type: datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
			Backends: []*datapathv1alpha1.Backend{
				{Address: "10.0.1.5", Port: 53, Weight: 1, State: datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE},
				{Address: "10.0.1.6", Port: 53, Weight: 2, State: datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING},
			},
		},
		{
			Id: 2, InternalId: 3, Frontend: &datapathv1alpha1.Frontend{Address: "::", Port: 30053, Protocol: udp},
			Type: datapathv1alpha1.ServiceType_SERVICE_TYPE_NODE_PORT, TrafficPolicy: datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL,
		},
	})
	ep := &endpoints{datapaths: []string{target}, timeout: 5 * time.Second, transport: transport{insecure: true}}

	var out bytes.Buffer
	if err := serviceList(t.Context(), &out, ep, serviceListOptions{output: "table"}); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"ID", "FRONTEND", "SERVICE", "TYPE", "BACKEND"},
		{"1", "10.96.0.10:53/UDP", "ClusterIP", "1", "=>", "10.0.1.5:53/UDP", "(active)"},
		{"2", "=>", "10.0.1.6:53/UDP", "weight", "2", "(terminating)"},
		{"2,3", "[::]:30053/UDP", "NodePort/Local", "(none)"},
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, got, w)
		}
	}

	out.Reset()
	if err := serviceList(t.Context(), &out, ep, serviceListOptions{output: "json"}); err != nil {
		t.Fatal(err)
	}
	var doc []struct {
		Datapath string `json:"datapath"`
		Services []struct {
			ID       int `json:"id"`
			Backends []struct {
				State string `json:"state"`
			} `json:"backends"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, out.String())
	}
	if len(doc) != 1 || doc[0].Datapath != target || len(doc[0].Services) != 2 || doc[0].Services[0].Backends[1].State != "BACKEND_STATE_TERMINATING" {
		t.Errorf("JSON output %+v", doc)
	}

	if err := serviceList(t.Context(), &out, ep, serviceListOptions{output: "yaml"}); err == nil {
		t.Error("an unknown output format was accepted")
	}
}
