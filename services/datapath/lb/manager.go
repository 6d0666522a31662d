// Package lb is the node agent's service load balancer: it validates the
// frontends and backends the API gives (validate.go), compiles them into
// the datapath's frontend entries (compile.go) with the metadata a restart
// needs (meta.go), allocates their IDs (ids.go), applies batches to the
// maps all or nothing (manager.go), lists them (list.go), clears the UDP
// flows of backends that leave (flows.go) and exposes the maps' fill
// level (metrics.go). The maps arrive through bpfmaps.LBMaps.
package lb

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/healthcheck"
)

// ServiceMap is the name under which LBMaps.Usage reports the map of
// frontend entries (bpffake's too).
const ServiceMap = "axon_lb_services"

// Config configures a Manager.
type Config struct {
	// NodeName is this node's name: backends whose node_name it is are
	// local.
	NodeName string
	// ServiceMap is the name, in LBMaps.Usage, of the map holding the
	// frontend entries, whose capacity a batch is checked against before
	// anything is written. A map Usage does not list is not checked (a
	// full map then fails the write, which is rolled back).
	ServiceMap string
	// HealthChecks, if set, is told the health check node ports of the
	// services after every change (healthcheck.Servers).
	HealthChecks HealthChecks
}

// HealthChecks serves the services' health check node ports.
type HealthChecks interface {
	// Sync makes the served ports those of want.
	Sync(want map[uint16]healthcheck.Service) error
}

// Manager owns the node's services: the one writer of the load balancer's
// frontend entries. It is safe for concurrent use.
type Manager struct {
	cfg     Config
	maps    bpfmaps.LBMaps
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex // guards the fields below and serializes writes
	restored bool
	services map[frontend]*record
	// sorted are the frontends in list order; nil after the set changed.
	sorted []frontend
	ids    ids
	// maglev builds external frontends' Maglev tables.
	maglev *maglevTables
	// hostPorts are the HOST_PORT entries and their IDs (hostport.go).
	hostPorts map[frontend]hostPort
}

// record is a service as the Manager holds it.
type record struct {
	// svc is the normalized service with its revision and update time.
	svc *datapathv1alpha1.Service
	rev uint64
	// entries are the frontend entries as written, one per scope.
	entries []bpfmaps.LBEntry
}

// New returns a Manager over maps; Restore must run before it serves.
// Without maps (nil) every call fails with ErrUnavailable.
func New(cfg Config, maps bpfmaps.LBMaps, log *slog.Logger) *Manager {
	return &Manager{cfg: cfg, maps: maps, log: log, metrics: newMetrics(), services: map[frontend]*record{}, ids: newIDs(), maglev: newMaglevTables(), hostPorts: map[frontend]hostPort{}}
}

// Result counts what a batch did.
type Result struct {
	// Changed are frontends created or whose entry changed.
	Changed int
	// Unchanged are frontends whose entry was already as requested.
	Unchanged int
	// Deleted are frontends removed.
	Deleted int
}

// Restore reads the frontend entries back from the maps and takes them
// as the node's services, with their IDs, revisions and update times.
// Entries of another writer (HostPort) are left alone, their IDs never
// reused. Until it succeeds every other call fails with ErrNotReady; once
// it has, it does nothing (the Manager's view is the maps' from then on).
func (m *Manager) Restore(ctx context.Context) error {
	if m.maps == nil {
		return nil
	}
	m.mu.Lock()
	restored := m.restored
	m.mu.Unlock()
	if restored {
		return nil
	}
	entries, err := m.maps.Services()
	if err != nil {
		return fmt.Errorf("read service entries: %w", err)
	}
	byFE := map[frontend][]bpfmaps.LBEntry{}
	for _, e := range entries {
		fe := frontend{addr: e.Key.Addr, port: e.Key.Port, proto: e.Key.Proto}
		byFE[fe] = append(byFE[fe], e)
	}
	services, used, hostPorts := map[frontend]*record{}, newIDs(), map[frontend]hostPort{}
	for fe, es := range byFE {
		for _, e := range es {
			used.use(e.Service.ID)
		}
		if t := es[0].Service.Type; t == bpfmaps.LBTypeHostPort {
			// The endpoints' (hostport.go).
			hp := hostPort{id: es[0].Service.ID}
			if a := es[0].Service.Active; len(a) > 0 {
				hp.backend = netip.AddrPortFrom(a[0].Addr, a[0].Port)
			}
			hostPorts[fe] = hp
			continue
		} else if t < bpfmaps.LBTypeClusterIP || t > bpfmaps.LBTypeExternalIP {
			continue // not the API's
		}
		svc, md, err := decompile(fe, es, m.cfg.NodeName)
		if err != nil {
			// Still the API's: listed, replaced by an upsert, removed by
			// a resync that lacks it.
			m.log.WarnContext(ctx, "service metadata unreadable; restored from its entries alone", "frontend", fe.String(), "err", err)
			md.revision = revisionOf(svc)
		}
		svc.Revision = revisionString(md.revision)
		if !md.updateTime.IsZero() {
			svc.UpdateTime = timestamppb.New(md.updateTime)
		}
		setIDs(svc, es)
		services[fe] = &record{svc: svc, rev: md.revision, entries: es}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.services, m.ids, m.restored, m.sorted, m.hostPorts = services, used, true, nil, hostPorts
	m.log.InfoContext(ctx, "services restored", "services", len(services), "entries", len(entries))
	m.syncHealthChecks(ctx)
	return nil
}

// syncHealthChecks tells cfg.HealthChecks the health check node ports of
// the services: per port, the Kubernetes Service of its frontends and its
// ready backends on this node (each address once). Frontends naming a port
// another Service holds are skipped and logged. A port that cannot be
// served is logged: the services stand. Caller holds m.mu.
func (m *Manager) syncHealthChecks(ctx context.Context) {
	if m.cfg.HealthChecks == nil {
		return
	}
	want := map[uint16]healthcheck.Service{}
	local := map[uint16]map[string]bool{}
	for _, fe := range m.order() {
		svc := m.services[fe].svc
		port := uint16(svc.GetHealthCheckNodePort())
		if port == 0 {
			continue
		}
		hc, ok := want[port]
		if !ok {
			hc = healthcheck.Service{Namespace: svc.GetServiceNamespace(), Name: svc.GetServiceName()}
			local[port] = map[string]bool{}
		} else if hc.Namespace != svc.GetServiceNamespace() || hc.Name != svc.GetServiceName() {
			m.log.WarnContext(ctx, "health check node port held by another service", "frontend", fe.String(), "port", port,
				"holder", hc.Namespace+"/"+hc.Name)
			continue
		}
		for _, b := range svc.GetBackends() {
			if b.GetNodeName() == m.cfg.NodeName && m.cfg.NodeName != "" &&
				b.GetState() == datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE {
				local[port][b.GetAddress()] = true
			}
		}
		hc.LocalEndpoints = len(local[port])
		want[port] = hc
	}
	if err := m.cfg.HealthChecks.Sync(want); err != nil {
		m.log.WarnContext(ctx, "health check node ports", "err", err)
	}
}

// ready reports why the Manager cannot serve yet. Caller holds m.mu.
func (m *Manager) ready() error {
	if m.maps == nil {
		return ErrUnavailable
	}
	if !m.restored {
		return fmt.Errorf("%w: the node is starting", ErrNotReady)
	}
	return nil
}

// Upsert creates or replaces one service; expectedRev, when set, must be
// the stored entry's revision, unless the stored entry already has the
// content given (a retry). It returns the stored entry.
func (m *Manager) Upsert(ctx context.Context, in *datapathv1alpha1.Service, expectedRev string) (*datapathv1alpha1.Service, error) {
	fe, svc, ferr := normalize(in)
	if ferr != nil {
		return nil, fmt.Errorf("%w: service (%s): %w", ErrInvalid, frontendLabel(in.GetFrontend(), fe, ferr), ferr)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, err
	}
	// A retry of an upsert that was applied finds its own content there.
	if r := m.services[fe]; r == nil || r.rev != revisionOf(svc) {
		if err := m.checkRevision(fe, expectedRev); err != nil {
			return nil, err
		}
	}
	if _, err := m.apply(ctx, batch{services: []entry{{fe: fe, svc: svc}}}); err != nil {
		return nil, err
	}
	return proto.CloneOf(m.services[fe].svc), nil
}

// Apply validates a batch as a whole, then applies it (see
// UpsertServices in datapath.proto): nothing of it when it is invalid or
// the maps cannot hold the result.
func (m *Manager) Apply(ctx context.Context, services []*datapathv1alpha1.Service, deletes []*datapathv1alpha1.Frontend, replaceAll bool) (Result, error) {
	b, err := validateBatch(services, deletes, replaceAll)
	if err != nil {
		return Result{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return Result{}, err
	}
	return m.apply(ctx, b)
}

// Delete removes a frontend and returns its entry as it was; nil for an
// unknown one, whatever expectedRev says.
func (m *Manager) Delete(ctx context.Context, in *datapathv1alpha1.Frontend, expectedRev string) (*datapathv1alpha1.Service, error) {
	fe, ferr := parseFrontend(in)
	if ferr != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, ferr)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, err
	}
	old := m.services[fe]
	if old == nil {
		return nil, nil // also with a revision: a retry of a delete that was applied
	}
	if err := m.checkRevision(fe, expectedRev); err != nil {
		return nil, err
	}
	if _, err := m.apply(ctx, batch{deletes: []frontend{fe}}); err != nil {
		return nil, err
	}
	return old.svc, nil
}

// checkRevision refuses a write whose expected revision is set and not
// the stored one's (an unknown frontend has none). Caller holds m.mu.
func (m *Manager) checkRevision(fe frontend, expected string) error {
	if expected == "" {
		return nil
	}
	var cur string
	if r := m.services[fe]; r != nil {
		cur = r.svc.GetRevision()
	}
	if cur != expected {
		return fmt.Errorf("%w: frontend %s is at revision %q, not %s", ErrConflict, fe, cur, echo(expected))
	}
	return nil
}

// plan is what a batch changes.
type plan struct {
	// next are the records of the batch's services after it.
	next map[frontend]*record
	// writes are the entries to write: changed services' new entries.
	writes []bpfmaps.LBEntry
	// removed are the frontends to delete, with their records.
	removed map[frontend]*record
	// stale are keys of changed services that no longer have that scope.
	stale []bpfmaps.LBKey
	// changed are the batch's services whose entries change.
	changed []frontend
	// allocated are IDs taken for new entries, released if nothing is
	// applied.
	allocated []uint32
	result    Result
}

// apply writes a validated batch. Caller holds m.mu.
func (m *Manager) apply(ctx context.Context, b batch) (Result, error) {
	p := m.plan(b)
	if err := m.checkCapacity(ctx, p); err != nil {
		m.release(p.allocated)
		return Result{}, err
	}
	if err := m.write(ctx, p); err != nil {
		m.release(p.allocated)
		return Result{}, err
	}
	flows := m.leftBackends(p)
	for fe, r := range p.removed {
		delete(m.services, fe)
		m.sorted = nil
		for _, e := range r.entries {
			m.ids.release(e.Service.ID)
		}
	}
	for fe, r := range p.next {
		if old := m.services[fe]; old != nil {
			for _, e := range old.entries {
				if !slices.ContainsFunc(r.entries, func(n bpfmaps.LBEntry) bool { return n.Service.ID == e.Service.ID }) {
					m.ids.release(e.Service.ID)
				}
			}
		} else {
			m.sorted = nil
		}
		m.services[fe] = r
	}
	m.deleteFlows(ctx, flows)
	m.syncHealthChecks(ctx)
	m.log.DebugContext(ctx, "services applied", "changed", p.result.Changed, "unchanged", p.result.Unchanged, "deleted", p.result.Deleted)
	return p.result, nil
}

// plan works out a batch's records, writes and deletions, allocating the
// IDs of new entries. Caller holds m.mu.
func (m *Manager) plan(b batch) plan {
	p := plan{next: map[frontend]*record{}, removed: map[frontend]*record{}}
	inBatch := map[frontend]bool{}
	now := time.Now().UTC()
	for _, e := range b.services {
		inBatch[e.fe] = true
		rev := revisionOf(e.svc)
		old := m.services[e.fe]
		if old != nil && old.rev == rev {
			// Unchanged: nothing to write, but the content is taken as
			// given (a restored entry lacks what the maps do not hold).
			svc := e.svc // the batch's own copy
			svc.Revision, svc.UpdateTime = old.svc.GetRevision(), old.svc.GetUpdateTime()
			setIDs(svc, old.entries)
			p.next[e.fe] = &record{svc: svc, rev: rev, entries: old.entries}
			p.result.Unchanged++
			continue
		}
		svc := e.svc
		svc.Revision, svc.UpdateTime = revisionString(rev), timestamppb.New(now)
		sc := scopes(svc)
		ids := make([]uint32, len(sc))
		for i, scope := range sc {
			if id := old.idOf(scope); id != 0 {
				ids[i] = id
				continue
			}
			ids[i] = m.ids.alloc()
			p.allocated = append(p.allocated, ids[i])
		}
		counts, unit := slotCounts(svc.GetBackends())
		entries := compile(e.fe, svc, counts, m.cfg.NodeName, ids, metaOf(svc, rev, now, unit).encode(), m.maglev)
		setIDs(svc, entries)
		for _, oe := range old.entriesOrNil() {
			if !slices.ContainsFunc(entries, func(n bpfmaps.LBEntry) bool { return n.Key == oe.Key }) {
				p.stale = append(p.stale, oe.Key)
			}
		}
		p.writes = append(p.writes, entries...)
		p.next[e.fe] = &record{svc: svc, rev: rev, entries: entries}
		p.changed = append(p.changed, e.fe)
		p.result.Changed++
	}
	for _, fe := range b.deletes {
		if r := m.services[fe]; r != nil {
			p.removed[fe] = r
		}
	}
	if b.replaceAll {
		for fe, r := range m.services {
			if !inBatch[fe] {
				p.removed[fe] = r
			}
		}
	}
	p.result.Deleted = len(p.removed)
	return p
}

// setIDs shows the IDs of a service's entries in it.
func setIDs(svc *datapathv1alpha1.Service, entries []bpfmaps.LBEntry) {
	svc.Id, svc.InternalId = 0, 0
	for _, e := range entries {
		if e.Key.Scope == bpfmaps.LBScopeInternal {
			svc.InternalId = e.Service.ID
		} else {
			svc.Id = e.Service.ID
		}
	}
}

// Count returns the number of services.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.services)
}

// idOf returns the ID of r's entry of scope; 0 for none (or no record).
func (r *record) idOf(scope bpfmaps.LBScope) uint32 {
	for _, e := range r.entriesOrNil() {
		if e.Key.Scope == scope {
			return e.Service.ID
		}
	}
	return 0
}

func (r *record) entriesOrNil() []bpfmaps.LBEntry {
	if r == nil {
		return nil
	}
	return r.entries
}

// checkCapacity refuses a plan the service map cannot hold at its peak:
// removed frontends go first, then the writes, then the stale scopes.
func (m *Manager) checkCapacity(ctx context.Context, p plan) error {
	if len(p.writes) == 0 || m.cfg.ServiceMap == "" {
		return nil
	}
	usage, err := m.maps.Usage()
	if err != nil {
		// The write itself still fails on a full map, and is rolled back.
		m.log.WarnContext(ctx, "service map usage unknown; writing without a capacity check", "err", err)
		return nil
	}
	i := slices.IndexFunc(usage, func(u bpfmaps.MapUsage) bool { return u.Name == m.cfg.ServiceMap })
	if i < 0 || usage[i].Capacity <= 0 {
		return nil
	}
	peak := usage[i].Entries
	for _, r := range p.removed {
		peak -= len(r.entries)
	}
	for _, e := range p.writes {
		if m.services[frontend{addr: e.Key.Addr, port: e.Key.Port, proto: e.Key.Proto}].idOf(e.Key.Scope) == 0 {
			peak++
		}
	}
	if peak > usage[i].Capacity {
		m.metrics.errors.WithLabelValues(reasonMapFull).Inc()
		return fmt.Errorf("%w: %s would need %d entries, it holds %d", ErrMapFull, m.cfg.ServiceMap, peak, usage[i].Capacity)
	}
	return nil
}

// write applies a plan to the maps; on a failure it puts back what it had
// changed (entries written, frontends deleted) and returns the error.
func (m *Manager) write(ctx context.Context, p plan) error {
	var removedKeys, oldEntries []bpfmaps.LBEntry
	for _, r := range p.removed {
		removedKeys = append(removedKeys, r.entries...)
	}
	for _, fe := range p.changed {
		oldEntries = append(oldEntries, m.services[fe].entriesOrNil()...)
	}
	var err error
	if len(removedKeys) > 0 {
		err = m.maps.DeleteServices(keysOf(removedKeys))
	}
	if err == nil && len(p.writes) > 0 {
		err = m.maps.PutServices(p.writes)
	}
	if err == nil && len(p.stale) > 0 {
		err = m.maps.DeleteServices(p.stale)
	}
	if err == nil {
		return nil
	}
	// Roll back: new keys go (freeing room), old entries come back.
	var added []bpfmaps.LBKey
	for _, e := range p.writes {
		if m.services[frontend{addr: e.Key.Addr, port: e.Key.Port, proto: e.Key.Proto}].idOf(e.Key.Scope) == 0 {
			added = append(added, e.Key)
		}
	}
	var rbErr error
	if len(added) > 0 {
		rbErr = m.maps.DeleteServices(added)
	}
	if restore := slices.Concat(oldEntries, removedKeys); len(restore) > 0 && rbErr == nil {
		rbErr = m.maps.PutServices(restore)
	}
	if rbErr != nil {
		m.log.ErrorContext(ctx, "rolling back a failed service batch failed; entries may differ from the API's view until the next upsert", "err", rbErr)
	}
	if errors.Is(err, unix.E2BIG) {
		m.metrics.errors.WithLabelValues(reasonMapFull).Inc()
		return fmt.Errorf("%w: write service entries: %w", ErrMapFull, err)
	}
	m.metrics.errors.WithLabelValues(reasonMapWrite).Inc()
	return fmt.Errorf("write service entries: %w", errors.Join(err, rbErr))
}

func keysOf(entries []bpfmaps.LBEntry) []bpfmaps.LBKey {
	keys := make([]bpfmaps.LBKey, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	return keys
}

// release frees IDs a plan allocated but did not use.
func (m *Manager) release(ids []uint32) {
	for _, id := range ids {
		m.ids.release(id)
	}
}

// revisionOf is the revision of a normalized service: a hash of its
// content, so the same content always has the same revision.
func revisionOf(svc *datapathv1alpha1.Service) uint64 {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(svc)
	if err != nil {
		// Cannot happen: validation leaves only ASCII strings.
		panic(fmt.Sprintf("marshal a normalized service: %v", err))
	}
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

func revisionString(rev uint64) string { return fmt.Sprintf("%016x", rev) }

// metaOf is a service's restore metadata; unit is its weights' (see
// slotCounts).
func metaOf(svc *datapathv1alpha1.Service, rev uint64, at time.Time, unit uint32) meta {
	m := meta{
		namespace: svc.GetServiceNamespace(), name: svc.GetServiceName(), portName: svc.GetPortName(),
		policy: int32(svc.GetTrafficPolicy()), revision: rev, updateTime: at, weightUnit: unit,
		healthPort: svc.GetHealthCheckNodePort(),
	}
	for _, s := range svc.GetSourceRanges() {
		m.sourceRanges = append(m.sourceRanges, netip.MustParsePrefix(s))
	}
	return m
}

// Collector returns the load balancer's metrics (see metrics.go).
func (m *Manager) Collector() prometheus.Collector { return &collector{m: m} }
