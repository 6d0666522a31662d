package lb

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

// TestApplyRefusesBadInput checks every validation rule through a batch
// whose second service is bad: the error wraps ErrInvalid, names the
// index, the frontend and the field, and nothing of the batch is applied.
func TestApplyRefusesBadInput(t *testing.T) {
	long := strings.Repeat("a", 10_000)
	for _, tc := range []struct {
		name  string
		edit  func(s *datapathv1alpha1.Service)
		field string // in the message
	}{
		{"no frontend", func(s *datapathv1alpha1.Service) { s.Frontend = nil }, "frontend: is required"},
		{"malformed address", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "10.96.0.x" }, "frontend.address"},
		{"address with zone", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "fe80::1%eth0" }, "frontend.address"},
		{"multicast address", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "224.0.0.1" }, "frontend.address"},
		{"loopback address", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "127.0.0.1" }, "frontend.address"},
		{"broadcast address", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "255.255.255.255" }, "frontend.address"},
		{"unspecified cluster IP", func(s *datapathv1alpha1.Service) { s.Frontend.Address = "0.0.0.0" }, "only for NODE_PORT"},
		{"port 0", func(s *datapathv1alpha1.Service) { s.Frontend.Port = 0 }, "frontend.port"},
		{"port above 65535", func(s *datapathv1alpha1.Service) { s.Frontend.Port = 65536 }, "frontend.port"},
		{"no protocol", func(s *datapathv1alpha1.Service) { s.Frontend.Protocol = 0 }, "frontend.protocol"},
		{"ICMP", func(s *datapathv1alpha1.Service) { s.Frontend.Protocol = commonv1alpha1.Protocol_PROTOCOL_ICMP }, "frontend.protocol"},
		{"unknown protocol", func(s *datapathv1alpha1.Service) { s.Frontend.Protocol = 99 }, "frontend.protocol"},
		{"SCTP, not translated", func(s *datapathv1alpha1.Service) { s.Frontend.Protocol = commonv1alpha1.Protocol_PROTOCOL_SCTP }, "frontend.protocol"},
		{"no type", func(s *datapathv1alpha1.Service) { s.Type = 0 }, "type: is required"},
		{"unknown type", func(s *datapathv1alpha1.Service) { s.Type = 9 }, "type: unknown"},
		{"unknown policy", func(s *datapathv1alpha1.Service) { s.TrafficPolicy = 7 }, "traffic_policy"},
		{"unknown affinity", func(s *datapathv1alpha1.Service) { s.SessionAffinity = 7 }, "session_affinity"},
		{"timeout without affinity", func(s *datapathv1alpha1.Service) { s.AffinityTimeout = durationpb.New(time.Minute) }, "affinity_timeout"},
		{"timeout 0", func(s *datapathv1alpha1.Service) {
			s.SessionAffinity, s.AffinityTimeout = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP, durationpb.New(0)
		}, "affinity_timeout"},
		{"timeout above a day", func(s *datapathv1alpha1.Service) {
			s.SessionAffinity, s.AffinityTimeout = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP, durationpb.New(86401*time.Second)
		}, "affinity_timeout"},
		{"invalid timeout", func(s *datapathv1alpha1.Service) {
			s.SessionAffinity, s.AffinityTimeout = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP, &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, "affinity_timeout"},
		{"namespace too long", func(s *datapathv1alpha1.Service) { s.ServiceNamespace = strings.Repeat("a", 64) }, "service_namespace"},
		{"namespace uppercase", func(s *datapathv1alpha1.Service) { s.ServiceNamespace = "Default" }, "service_namespace"},
		{"name too long", func(s *datapathv1alpha1.Service) { s.ServiceName = long }, "service_name"},
		{"name with slash", func(s *datapathv1alpha1.Service) { s.ServiceName = "a/b" }, "service_name"},
		{"port name too long", func(s *datapathv1alpha1.Service) { s.PortName = strings.Repeat("p", 16) }, "port_name"},
		{"health check port on a cluster IP", func(s *datapathv1alpha1.Service) { s.TrafficPolicy, s.HealthCheckNodePort = local, 32000 }, "health_check_node_port"},
		{"health check port with a Cluster policy", func(s *datapathv1alpha1.Service) { s.Type, s.HealthCheckNodePort = nodePort, 32000 }, "health_check_node_port"},
		{"health check port above 65535", func(s *datapathv1alpha1.Service) {
			s.Type, s.TrafficPolicy, s.HealthCheckNodePort = nodePort, local, 65536
		}, "health_check_node_port"},
		{"source ranges on a cluster IP", func(s *datapathv1alpha1.Service) { s.SourceRanges = []string{"10.0.0.0/8"} }, "source_ranges: are only for LOAD_BALANCER"},
		{"malformed source range", func(s *datapathv1alpha1.Service) { s.Type, s.SourceRanges = lbType, []string{"10.0.0.0/33"} }, "source_ranges[0]"},
		{"source range of the other family", func(s *datapathv1alpha1.Service) {
			s.Type, s.SourceRanges = lbType, []string{"10.0.0.0/8", "2001:db8::/32"}
		}, "source_ranges[1]"},
		{"too many source ranges", func(s *datapathv1alpha1.Service) {
			s.Type = lbType
			for range MaxSourceRanges + 1 {
				s.SourceRanges = append(s.SourceRanges, "10.0.0.0/8")
			}
		}, "source_ranges: 17 ranges"},
		{"malformed backend", func(s *datapathv1alpha1.Service) { s.Backends[1].Address = "10.0.1" }, "backends[1].address"},
		{"backend of the other family", func(s *datapathv1alpha1.Service) { s.Backends[0].Address = "2001:db8::1" }, "backends[0].address"},
		{"unspecified backend", func(s *datapathv1alpha1.Service) { s.Backends[0].Address = "0.0.0.0" }, "backends[0].address"},
		{"loopback backend", func(s *datapathv1alpha1.Service) { s.Backends[0].Address = "127.0.0.2" }, "backends[0].address"},
		{"backend port 0", func(s *datapathv1alpha1.Service) { s.Backends[1].Port = 0 }, "backends[1].port"},
		{"backend port above 65535", func(s *datapathv1alpha1.Service) { s.Backends[1].Port = 70000 }, "backends[1].port"},
		{"backend twice", func(s *datapathv1alpha1.Service) { s.Backends[1].Address = s.Backends[0].Address }, "backends[1]: 10.0.1.1:8080 is backends[0] too"},
		{"weight above the cap", func(s *datapathv1alpha1.Service) { s.Backends[0].Weight = MaxWeight + 1 }, "backends[0].weight"},
		{"unknown state", func(s *datapathv1alpha1.Service) { s.Backends[0].State = 5 }, "backends[0].state"},
		{"node name with spaces", func(s *datapathv1alpha1.Service) { s.Backends[0].NodeName = "node a" }, "backends[0].node_name"},
		{"node name too long", func(s *datapathv1alpha1.Service) { s.Backends[0].NodeName = long }, "backends[0].node_name"},
		{"zone too long", func(s *datapathv1alpha1.Service) { s.Backends[0].Zone = long }, "backends[0].zone"},
		{"too many backends", func(s *datapathv1alpha1.Service) {
			s.Backends = nil
			for i := range MaxBackends + 1 {
				s.Backends = append(s.Backends, &datapathv1alpha1.Backend{Address: "10.0.1.1", Port: uint32(i + 1)})
			}
		}, "backends: 4097 backends, at most 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := bpffake.New()
			m := newManager(t, fake)
			bad := service("10.96.0.20", 80, tcp, clusterIP, "10.0.1.1:8080", "10.0.1.2:8080")
			tc.edit(bad)
			_, err := m.Apply(t.Context(), []*datapathv1alpha1.Service{service("10.96.0.10", 53, udp, clusterIP, "10.0.1.5:53"), bad}, nil, false)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Apply = %v, want ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "services[1] (") || !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name the index and %q", msg, tc.field)
			}
			if len(msg) > 300 {
				t.Errorf("message of %d bytes echoes too much input: %.300s", len(msg), msg)
			}
			if got := fake.LBEntries(); len(got) != 0 || fake.Calls(bpffake.OpPutServices) != 0 {
				t.Errorf("a refused batch wrote %v", got)
			}
			if got := listAll(t, m); len(got) != 0 {
				t.Errorf("a refused batch listed %v", got)
			}
		})
	}
}

// TestApplyRefusesBadBatches checks the rules of a batch as a whole.
func TestApplyRefusesBadBatches(t *testing.T) {
	a := service("10.96.0.10", 53, udp, clusterIP, "10.0.1.5:53")
	mapped := service("::ffff:10.96.0.10", 53, udp, clusterIP, "10.0.1.6:53")
	fe := func(addr string) *datapathv1alpha1.Frontend {
		return &datapathv1alpha1.Frontend{Address: addr, Port: 53, Protocol: udp}
	}
	for _, tc := range []struct {
		name       string
		services   []*datapathv1alpha1.Service
		deletes    []*datapathv1alpha1.Frontend
		replaceAll bool
		want       string
	}{
		{"frontend twice", []*datapathv1alpha1.Service{a, a}, nil, false, "services[1] (10.96.0.10:53/UDP): frontend: given twice, also as services[0]"},
		{"frontend twice, once IPv4-mapped", []*datapathv1alpha1.Service{a, mapped}, nil, false, "services[1] (10.96.0.10:53/UDP): frontend: given twice"},
		{"frontend upserted and deleted", []*datapathv1alpha1.Service{a}, []*datapathv1alpha1.Frontend{fe("10.96.0.10")}, false, "deletes[0] (10.96.0.10:53/UDP): frontend: given twice, also as services[0]"},
		{"malformed delete", nil, []*datapathv1alpha1.Frontend{fe("10.96.0.1"), fe("nope")}, false, `deletes[1] (frontend "nope"): frontend.address`},
		{"deletes with replace_all", []*datapathv1alpha1.Service{a}, []*datapathv1alpha1.Frontend{fe("10.96.0.11")}, true, "deletes: not allowed with replace_all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := bpffake.New()
			m := newManager(t, fake)
			_, err := m.Apply(t.Context(), tc.services, tc.deletes, tc.replaceAll)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want ErrInvalid with %q", err, tc.want)
			}
			if fake.Calls(bpffake.OpPutServices)+fake.Calls(bpffake.OpDeleteServices) != 0 {
				t.Error("a refused batch wrote to the maps")
			}
		})
	}
}

// TestNormalize checks the canonical form: defaults explicit, addresses
// re-spelled, lists sorted.
func TestNormalize(t *testing.T) {
	in := &datapathv1alpha1.Service{
		Frontend:        &datapathv1alpha1.Frontend{Address: "2001:DB8::0:10", Port: 443, Protocol: tcp},
		Type:            lbType,
		SessionAffinity: datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP,
		SourceRanges:    []string{"2001:db8:2::1/48", "2001:db8:1::/48", "2001:db8:2::/48"},
		Backends: []*datapathv1alpha1.Backend{
			{Address: "2001:db8::b", Port: 8443, Weight: 3, State: term, NodeName: thisNode, Zone: "z1"},
			{Address: "2001:DB8::A", Port: 8443},
		},
		Revision: "ignored",
	}
	_, got, ferr := normalize(in)
	if ferr != nil {
		t.Fatal(ferr)
	}
	want := &datapathv1alpha1.Service{
		Frontend:        &datapathv1alpha1.Frontend{Address: "2001:db8::10", Port: 443, Protocol: tcp},
		Type:            lbType,
		TrafficPolicy:   datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_CLUSTER,
		SessionAffinity: datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP,
		AffinityTimeout: durationpb.New(DefaultAffinity),
		SourceRanges:    []string{"2001:db8:1::/48", "2001:db8:2::/48"},
		Backends: []*datapathv1alpha1.Backend{
			{Address: "2001:db8::a", Port: 8443, Weight: 1, State: active},
			{Address: "2001:db8::b", Port: 8443, Weight: 3, State: term, NodeName: thisNode, Zone: "z1"},
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("normalize =\n%v\nwant\n%v", got, want)
	}
}

// FuzzNormalize feeds arbitrary Service messages to the validator: it
// must not panic, and what it accepts must be a fixed point whose
// metadata fits the maps and whose entries compile.
func FuzzNormalize(f *testing.F) {
	seed := service("10.96.0.10", 80, tcp, lbType, "10.0.1.1:8080", "10.0.1.2:8080")
	seed.SourceRanges = []string{"192.0.2.0/24"}
	seed.TrafficPolicy = local
	for _, s := range []*datapathv1alpha1.Service{seed, service("2001:db8::1", 53, udp, nodePort, "[2001:db8::2]:53")} {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := &datapathv1alpha1.Service{}
		if proto.Unmarshal(b, in) != nil {
			return
		}
		fe, out, ferr := normalize(in)
		if ferr != nil {
			if len(ferr.Error()) > 400 {
				t.Errorf("error of %d bytes", len(ferr.Error()))
			}
			return
		}
		_, again, ferr := normalize(out)
		if ferr != nil || !proto.Equal(out, again) {
			t.Fatalf("normalize is not a fixed point: %v, %v", again, ferr)
		}
		counts, unit := slotCounts(out.GetBackends())
		md := metaOf(out, revisionOf(out), time.Now(), unit)
		if n := len(md.encode()); n > bpfmaps.MaxLBMeta {
			t.Fatalf("metadata of %d bytes", n)
		}
		entries := compile(fe, out, counts, thisNode, []uint32{1, 2}, md.encode(), nil)
		for _, e := range entries {
			if len(e.Service.Active) > MaxSlots || len(e.Service.Terminating) > MaxSlots {
				t.Fatalf("%d+%d slots", len(e.Service.Active), len(e.Service.Terminating))
			}
		}
	})
}
