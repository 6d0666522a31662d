package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// Limits of a Service, as documented in loadbalancer.proto. They bound
// every string and list of a request, and together guarantee that a
// service's restore metadata fits bpfmaps.MaxLBMeta (see meta.go).
const (
	// MaxBackends is the most backends a frontend may hold.
	MaxBackends = 4096
	// MaxWeight is the largest backend weight.
	MaxWeight = 65535
	// MaxSourceRanges is the most source ranges a frontend may hold.
	MaxSourceRanges = 16
	// MinAffinity and MaxAffinity bound affinity_timeout (Kubernetes'
	// timeoutSeconds: 1..86400).
	MinAffinity = time.Second
	MaxAffinity = 86400 * time.Second
	// DefaultAffinity is the affinity timeout of CLIENT_IP when unset.
	DefaultAffinity = 10800 * time.Second
	// maxNameLen bounds service_namespace and service_name (a DNS label).
	maxNameLen = 63
	// maxPortNameLen bounds port_name (an IANA service name).
	maxPortNameLen = 15
	// maxNodeNameLen bounds Backend.node_name (a DNS subdomain).
	maxNodeNameLen = 253
	// maxZoneLen bounds Backend.zone (a label value).
	maxZoneLen = 63
	// echoLen is the most of a caller's string an error message repeats.
	echoLen = 40
)

// broadcast is IPv4's limited broadcast address, never a service's.
var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// frontend is a service's key: address (unmapped), port and IANA protocol.
type frontend struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

func (f frontend) String() string {
	return netip.AddrPortFrom(f.addr, f.port).String() + "/" + protoName(f.proto)
}

func compareFrontend(a, b frontend) int {
	return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port), cmp.Compare(a.proto, b.proto))
}

func protoName(p uint8) string {
	if s, ok := commonv1alpha1.Protocol_name[int32(p)]; ok {
		return strings.TrimPrefix(s, "PROTOCOL_")
	}
	return fmt.Sprint(p)
}

// echo quotes a caller's string for an error message, cut to echoLen bytes.
func echo(s string) string {
	if len(s) > echoLen {
		return fmt.Sprintf("%q... (%d bytes)", s[:echoLen], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// fieldError is a problem with one field of a service.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func fieldErr(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// parseFrontend validates a frontend message.
func parseFrontend(fe *datapathv1alpha1.Frontend) (frontend, *fieldError) {
	if fe == nil {
		return frontend{}, fieldErr("frontend", "is required")
	}
	addr, err := netip.ParseAddr(fe.GetAddress())
	if err != nil || addr.Zone() != "" {
		return frontend{}, fieldErr("frontend.address", "%s is not an IP address", echo(fe.GetAddress()))
	}
	addr = addr.Unmap()
	if addr.IsMulticast() || addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr == broadcast {
		return frontend{}, fieldErr("frontend.address", "%s is not a unicast address", addr)
	}
	if fe.GetPort() < 1 || fe.GetPort() > 65535 {
		return frontend{}, fieldErr("frontend.port", "%d is not in 1..65535", fe.GetPort())
	}
	switch fe.GetProtocol() {
	case commonv1alpha1.Protocol_PROTOCOL_TCP, commonv1alpha1.Protocol_PROTOCOL_UDP:
	case commonv1alpha1.Protocol_PROTOCOL_SCTP:
		// Accepted and never translated, its traffic would be lost.
		return frontend{}, fieldErr("frontend.protocol", "SCTP frontends are not load-balanced yet (TCP and UDP are)")
	default:
		return frontend{}, fieldErr("frontend.protocol", "must be TCP or UDP, got %v", fe.GetProtocol())
	}
	return frontend{addr: addr, port: uint16(fe.GetPort()), proto: uint8(fe.GetProtocol())}, nil
}

// normalize validates a service and returns it in canonical form: the
// frontend and backend addresses unmapped and re-spelled, backends sorted
// by address and port, source ranges masked, sorted and deduplicated,
// defaults made explicit (weight 1, ACTIVE, CLUSTER, NONE, the CLIENT_IP
// timeout), output-only fields cleared. Two requests that mean the same
// entry normalize to equal messages.
func normalize(in *datapathv1alpha1.Service) (frontend, *datapathv1alpha1.Service, *fieldError) {
	fe, ferr := parseFrontend(in.GetFrontend())
	if ferr != nil {
		return fe, nil, ferr
	}
	out := &datapathv1alpha1.Service{
		Frontend: &datapathv1alpha1.Frontend{Address: fe.addr.String(), Port: uint32(fe.port), Protocol: in.GetFrontend().GetProtocol()},
		Type:     in.GetType(),
	}
	switch in.GetType() {
	case datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP, datapathv1alpha1.ServiceType_SERVICE_TYPE_LOAD_BALANCER,
		datapathv1alpha1.ServiceType_SERVICE_TYPE_EXTERNAL_IP:
		if fe.addr.IsUnspecified() {
			return fe, nil, fieldErr("frontend.address", "%s stands for every node address, only for NODE_PORT", fe.addr)
		}
	case datapathv1alpha1.ServiceType_SERVICE_TYPE_NODE_PORT:
	case datapathv1alpha1.ServiceType_SERVICE_TYPE_UNSPECIFIED:
		return fe, nil, fieldErr("type", "is required")
	default:
		return fe, nil, fieldErr("type", "unknown type %d", in.GetType())
	}
	if err := normalizePolicy(in, out); err != nil {
		return fe, nil, err
	}
	if err := normalizeNames(in, out); err != nil {
		return fe, nil, err
	}
	if err := normalizeHealthCheck(in, out); err != nil {
		return fe, nil, err
	}
	if err := normalizeSourceRanges(in, out, fe); err != nil {
		return fe, nil, err
	}
	if err := normalizeBackends(in, out, fe); err != nil {
		return fe, nil, err
	}
	return fe, out, nil
}

func normalizePolicy(in, out *datapathv1alpha1.Service) *fieldError {
	switch in.GetTrafficPolicy() {
	case datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_UNSPECIFIED, datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_CLUSTER:
		out.TrafficPolicy = datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_CLUSTER
	case datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL:
		out.TrafficPolicy = in.GetTrafficPolicy()
	default:
		return fieldErr("traffic_policy", "unknown policy %d", in.GetTrafficPolicy())
	}
	switch in.GetSessionAffinity() {
	case datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_UNSPECIFIED, datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_NONE:
		out.SessionAffinity = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_NONE
		if in.GetAffinityTimeout() != nil {
			return fieldErr("affinity_timeout", "is only for CLIENT_IP session affinity")
		}
	case datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP:
		out.SessionAffinity = in.GetSessionAffinity()
		d := DefaultAffinity
		if t := in.GetAffinityTimeout(); t != nil {
			if err := t.CheckValid(); err != nil {
				return fieldErr("affinity_timeout", "is not a valid duration")
			}
			d = t.AsDuration()
			if d < MinAffinity || d > MaxAffinity {
				return fieldErr("affinity_timeout", "%s is not in %s..%s", d, MinAffinity, MaxAffinity)
			}
		}
		out.AffinityTimeout = durationpb.New(d)
	default:
		return fieldErr("session_affinity", "unknown affinity %d", in.GetSessionAffinity())
	}
	return nil
}

// normalizeHealthCheck checks health_check_node_port: only for an
// external frontend with a LOCAL policy (after normalizePolicy).
func normalizeHealthCheck(in, out *datapathv1alpha1.Service) *fieldError {
	port := in.GetHealthCheckNodePort()
	if port == 0 {
		return nil
	}
	if port > 65535 {
		return fieldErr("health_check_node_port", "%d is not in 1..65535", port)
	}
	if out.GetType() == datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP ||
		out.GetTrafficPolicy() != datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL {
		return fieldErr("health_check_node_port", "is only for NODE_PORT, LOAD_BALANCER and EXTERNAL_IP frontends with a LOCAL policy")
	}
	out.HealthCheckNodePort = port
	return nil
}

func normalizeNames(in, out *datapathv1alpha1.Service) *fieldError {
	if !isLabel(in.GetServiceNamespace(), maxNameLen) {
		return fieldErr("service_namespace", "%s is not a DNS label (lowercase letters, digits and '-', at most %d)", echo(in.GetServiceNamespace()), maxNameLen)
	}
	if !isLabel(in.GetServiceName(), maxNameLen) {
		return fieldErr("service_name", "%s is not a DNS label (lowercase letters, digits and '-', at most %d)", echo(in.GetServiceName()), maxNameLen)
	}
	if !isLabel(in.GetPortName(), maxPortNameLen) {
		return fieldErr("port_name", "%s is not a port name (lowercase letters, digits and '-', at most %d)", echo(in.GetPortName()), maxPortNameLen)
	}
	out.ServiceNamespace, out.ServiceName, out.PortName = in.GetServiceNamespace(), in.GetServiceName(), in.GetPortName()
	return nil
}

func normalizeSourceRanges(in, out *datapathv1alpha1.Service, fe frontend) *fieldError {
	ranges := in.GetSourceRanges()
	if len(ranges) == 0 {
		return nil
	}
	if in.GetType() != datapathv1alpha1.ServiceType_SERVICE_TYPE_LOAD_BALANCER {
		return fieldErr("source_ranges", "are only for LOAD_BALANCER frontends")
	}
	if len(ranges) > MaxSourceRanges {
		return fieldErr("source_ranges", "%d ranges, at most %d", len(ranges), MaxSourceRanges)
	}
	prefixes := make([]netip.Prefix, 0, len(ranges))
	for i, s := range ranges {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fieldErr(fmt.Sprintf("source_ranges[%d]", i), "%s is not a CIDR", echo(s))
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return fieldErr(fmt.Sprintf("source_ranges[%d]", i), "%s is not a CIDR", echo(s))
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Is4() != fe.addr.Is4() {
			return fieldErr(fmt.Sprintf("source_ranges[%d]", i), "%s is not of the frontend's family", p)
		}
		prefixes = append(prefixes, p.Masked())
	}
	slices.SortFunc(prefixes, comparePrefix)
	for _, p := range slices.Compact(prefixes) {
		out.SourceRanges = append(out.SourceRanges, p.String())
	}
	return nil
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

func normalizeBackends(in, out *datapathv1alpha1.Service, fe frontend) *fieldError {
	if n := len(in.GetBackends()); n > MaxBackends {
		return fieldErr("backends", "%d backends, at most %d", n, MaxBackends)
	}
	seen := make(map[netip.AddrPort]int, len(in.GetBackends()))
	type parsed struct {
		ap netip.AddrPort
		b  *datapathv1alpha1.Backend
	}
	list := make([]parsed, 0, len(in.GetBackends()))
	for i, b := range in.GetBackends() {
		field := fmt.Sprintf("backends[%d]", i)
		addr, err := netip.ParseAddr(b.GetAddress())
		if err != nil || addr.Zone() != "" {
			return fieldErr(field+".address", "%s is not an IP address", echo(b.GetAddress()))
		}
		addr = addr.Unmap()
		if addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr == broadcast {
			return fieldErr(field+".address", "%s is not a unicast address", addr)
		}
		if addr.Is4() != fe.addr.Is4() {
			return fieldErr(field+".address", "%s is not of the frontend's family", addr)
		}
		if b.GetPort() < 1 || b.GetPort() > 65535 {
			return fieldErr(field+".port", "%d is not in 1..65535", b.GetPort())
		}
		ap := netip.AddrPortFrom(addr, uint16(b.GetPort()))
		if j, dup := seen[ap]; dup {
			return fieldErr(field, "%s is backends[%d] too", ap, j)
		}
		seen[ap] = i
		weight := b.GetWeight()
		if weight == 0 {
			weight = 1
		}
		if weight > MaxWeight {
			return fieldErr(field+".weight", "%d is above %d", weight, MaxWeight)
		}
		state := b.GetState()
		switch state {
		case datapathv1alpha1.BackendState_BACKEND_STATE_UNSPECIFIED:
			state = datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE
		case datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE, datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING:
		default:
			return fieldErr(field+".state", "unknown state %d", state)
		}
		if !isSubdomain(b.GetNodeName()) {
			return fieldErr(field+".node_name", "%s is not a node name (a DNS subdomain of at most %d)", echo(b.GetNodeName()), maxNodeNameLen)
		}
		if !isLabelValue(b.GetZone()) {
			return fieldErr(field+".zone", "%s is not a zone (letters, digits, '-', '_' and '.', at most %d)", echo(b.GetZone()), maxZoneLen)
		}
		list = append(list, parsed{ap: ap, b: &datapathv1alpha1.Backend{
			Address: addr.String(), Port: b.GetPort(), Weight: weight, State: state, NodeName: b.GetNodeName(), Zone: b.GetZone(),
		}})
	}
	slices.SortFunc(list, func(x, y parsed) int { return x.ap.Compare(y.ap) })
	out.Backends = make([]*datapathv1alpha1.Backend, len(list))
	for i, p := range list {
		out.Backends[i] = p.b
	}
	return nil
}

// backendAddr is a normalized backend's address and port.
func backendAddr(b *datapathv1alpha1.Backend) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(b.GetAddress()), uint16(b.GetPort()))
}

func compareBackend(a, b *datapathv1alpha1.Backend) int {
	return backendAddr(a).Compare(backendAddr(b))
}

// isLabel reports whether s is empty or an RFC 1123 label of at most max
// characters: lowercase letters, digits and '-', not at either end.
func isLabel(s string, max int) bool {
	if s == "" {
		return true
	}
	if len(s) > max || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isSubdomain reports whether s is empty or an RFC 1123 subdomain (a
// Kubernetes node name).
func isSubdomain(s string) bool {
	if len(s) > maxNodeNameLen {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" && s != "" || !isLabel(l, maxNameLen) {
			return false
		}
	}
	return true
}

// isLabelValue reports whether s is empty or a Kubernetes label value.
func isLabelValue(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > maxZoneLen || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// entry is a validated service of a request: its key and normalized form.
type entry struct {
	fe  frontend
	svc *datapathv1alpha1.Service
}

// batch is a validated UpsertServices request.
type batch struct {
	services   []entry
	deletes    []frontend
	replaceAll bool
}

// validateBatch validates every service and delete of a batch before
// anything is applied. An error wraps ErrInvalid and names the index, the
// frontend and the field.
func validateBatch(services []*datapathv1alpha1.Service, deletes []*datapathv1alpha1.Frontend, replaceAll bool) (batch, error) {
	b := batch{replaceAll: replaceAll}
	if replaceAll && len(deletes) > 0 {
		return b, fmt.Errorf("%w: deletes: not allowed with replace_all (every frontend not in services is removed)", ErrInvalid)
	}
	// seen is where each frontend was given: services[i] as i, deletes[i]
	// as -1-i.
	seen := make(map[frontend]int, len(services)+len(deletes))
	where := func(i int) string {
		if i < 0 {
			return fmt.Sprintf("deletes[%d]", -1-i)
		}
		return fmt.Sprintf("services[%d]", i)
	}
	b.services = make([]entry, 0, len(services))
	for i, in := range services {
		fe, svc, ferr := normalize(in)
		if ferr != nil {
			return b, fmt.Errorf("%w: services[%d] (%s): %w", ErrInvalid, i, frontendLabel(in.GetFrontend(), fe, ferr), ferr)
		}
		if prev, dup := seen[fe]; dup {
			return b, fmt.Errorf("%w: %s (%s): frontend: given twice, also as %s", ErrInvalid, where(i), fe, where(prev))
		}
		seen[fe] = i
		b.services = append(b.services, entry{fe: fe, svc: svc})
	}
	for i, in := range deletes {
		fe, ferr := parseFrontend(in)
		if ferr != nil {
			return b, fmt.Errorf("%w: deletes[%d] (%s): %w", ErrInvalid, i, frontendLabel(in, fe, ferr), ferr)
		}
		if prev, dup := seen[fe]; dup {
			return b, fmt.Errorf("%w: %s (%s): frontend: given twice, also as %s", ErrInvalid, where(-1-i), fe, where(prev))
		}
		seen[fe] = -1 - i
		b.deletes = append(b.deletes, fe)
	}
	return b, nil
}

// frontendLabel names a frontend in an error: parsed when it could be,
// else its address as given, bounded.
func frontendLabel(in *datapathv1alpha1.Frontend, fe frontend, ferr *fieldError) string {
	if !strings.HasPrefix(ferr.field, "frontend") {
		return fe.String()
	}
	return "frontend " + echo(in.GetAddress())
}
