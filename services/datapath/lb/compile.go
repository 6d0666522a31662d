package lb

import (
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// MaxSlots is the most backend slots (weights expanded) a frontend entry
// holds, active and terminating together: weights whose sum is larger are
// scaled down to fit.
const MaxSlots = 65535

// scopes returns the entries a service needs: a frontend whose external
// traffic policy is LOCAL (NODE_PORT, LOAD_BALANCER, EXTERNAL_IP) has an
// external entry with this node's backends only and an internal one with
// all; every other frontend has one external entry.
func scopes(svc *datapathv1alpha1.Service) []bpfmaps.LBScope {
	if svc.GetTrafficPolicy() == datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL &&
		svc.GetType() != datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP {
		return []bpfmaps.LBScope{bpfmaps.LBScopeExternal, bpfmaps.LBScopeInternal}
	}
	return []bpfmaps.LBScope{bpfmaps.LBScopeExternal}
}

// slotCounts returns how many slots each backend (of a normalized
// service, in its order) takes: its weight divided by the weights'
// greatest common divisor, scaled down when the slots of all states
// together would exceed MaxSlots (every backend keeps at least one). unit
// is the common divisor, 0 when scaling made the weights unrecoverable
// from the counts.
func slotCounts(backends []*datapathv1alpha1.Backend) (counts []int, unit uint32) {
	for _, b := range backends {
		unit = gcd(unit, b.GetWeight())
	}
	counts = make([]int, len(backends))
	sum := 0
	for i, b := range backends {
		counts[i] = int(b.GetWeight() / unit)
		sum += counts[i]
	}
	if sum > MaxSlots {
		unit = 0
		// Each count rounds down to at least 1: reserving one slot per
		// backend keeps the total within MaxSlots.
		room := MaxSlots - len(backends)
		for i := range counts {
			counts[i] = max(1, counts[i]*room/sum)
		}
	}
	return counts, unit
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// compile returns the map entries of a normalized service, one per scope
// (ids gives each scope's ID, in scopes' order), each carrying metaBytes;
// counts are its backends' slots (slotCounts). Local backends are those on
// node. The entries of external frontends get their Maglev table from
// tables (none if nil).
func compile(fe frontend, svc *datapathv1alpha1.Service, counts []int, node string, ids []uint32, metaBytes []byte, tables *maglevTables) []bpfmaps.LBEntry {
	localOnly := svc.GetTrafficPolicy() == datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL
	var affinity time.Duration
	if svc.GetSessionAffinity() == datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP {
		affinity = svc.GetAffinityTimeout().AsDuration()
	}
	// Normalized: valid, masked, of the frontend's family.
	var ranges []netip.Prefix
	for _, s := range svc.GetSourceRanges() {
		ranges = append(ranges, netip.MustParsePrefix(s))
	}
	var entries []bpfmaps.LBEntry
	for i, scope := range scopes(svc) {
		// The internal entry of a LOCAL frontend serves in-cluster
		// clients, which use every backend.
		onlyLocal := localOnly && scope == bpfmaps.LBScopeExternal
		lb := bpfmaps.LBService{ID: ids[i], Type: bpfmaps.LBType(svc.GetType()), Affinity: affinity, Meta: metaBytes, SourceRanges: ranges}
		for j, b := range svc.GetBackends() {
			local := node != "" && b.GetNodeName() == node
			if onlyLocal && !local {
				continue
			}
			ap := backendAddr(b)
			be := bpfmaps.LBBackend{Addr: ap.Addr(), Port: ap.Port(), Local: local}
			for range counts[j] {
				if b.GetState() == datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING {
					lb.Terminating = append(lb.Terminating, be)
				} else {
					lb.Active = append(lb.Active, be)
				}
			}
		}
		if maglevFrontend(lb.Type) {
			lb.Maglev = tables.table(lb.Active, fe.proto)
		}
		entries = append(entries, bpfmaps.LBEntry{
			Key:     bpfmaps.LBKey{Addr: fe.addr, Port: fe.port, Proto: fe.proto, Scope: scope},
			Service: lb,
		})
	}
	return entries
}

// decompile rebuilds a service from its entries as Services read them
// back (one per scope) and the metadata they carry. What the entries do
// not hold comes back empty: backends' zones and the names of nodes other
// than this one, and, for a CLUSTER_IP frontend with a LOCAL policy, the
// backends of other nodes; the next upsert of the same content (a
// client's resync) fills them in again without a map write. Unreadable
// metadata is returned as an error beside the service rebuilt from the
// entries alone (no names or source ranges, the policy their scopes say).
func decompile(fe frontend, entries []bpfmaps.LBEntry, node string) (*datapathv1alpha1.Service, meta, error) {
	use := entries[0]
	for _, e := range entries {
		if e.Key.Scope == bpfmaps.LBScopeInternal {
			use = e // the entry with every backend
		}
	}
	m, err := decodeMeta(use.Service.Meta)
	if err != nil {
		m = meta{policy: int32(datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_CLUSTER)}
		if len(entries) > 1 {
			m.policy = int32(datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL)
		}
	}
	svc := &datapathv1alpha1.Service{
		Frontend:         &datapathv1alpha1.Frontend{Address: fe.addr.String(), Port: uint32(fe.port), Protocol: commonv1alpha1.Protocol(fe.proto)},
		Type:             datapathv1alpha1.ServiceType(use.Service.Type),
		TrafficPolicy:    datapathv1alpha1.TrafficPolicy(m.policy),
		SessionAffinity:  datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_NONE,
		ServiceNamespace: m.namespace, ServiceName: m.name, PortName: m.portName,
		HealthCheckNodePort: m.healthPort,
	}
	if use.Service.Affinity > 0 {
		svc.SessionAffinity = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP
		svc.AffinityTimeout = durationpb.New(use.Service.Affinity)
	}
	for _, p := range m.sourceRanges {
		svc.SourceRanges = append(svc.SourceRanges, p.String())
	}
	unit := max(m.weightUnit, 1)
	add := func(list []bpfmaps.LBBackend, state datapathv1alpha1.BackendState) {
		byAddr := map[netip.AddrPort]*datapathv1alpha1.Backend{}
		for _, be := range list {
			ap := netip.AddrPortFrom(be.Addr, be.Port)
			if b, ok := byAddr[ap]; ok {
				b.Weight += unit
				continue
			}
			b := &datapathv1alpha1.Backend{Address: be.Addr.String(), Port: uint32(be.Port), Weight: unit, State: state}
			if be.Local {
				b.NodeName = node
			}
			byAddr[ap] = b
			svc.Backends = append(svc.Backends, b)
		}
	}
	add(use.Service.Active, datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE)
	add(use.Service.Terminating, datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING)
	slices.SortFunc(svc.Backends, compareBackend)
	return svc, m, err
}
