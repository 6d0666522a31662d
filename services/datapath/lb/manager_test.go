package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

// TestNotReadyBeforeRestore checks that nothing is served before the
// services are read back from the maps.
func TestNotReadyBeforeRestore(t *testing.T) {
	m := New(Config{NodeName: thisNode}, bpffake.New(), slog.New(slog.DiscardHandler))
	if _, err := m.Upsert(t.Context(), service("10.96.0.10", 80, tcp, clusterIP), ""); !errors.Is(err, ErrNotReady) {
		t.Errorf("Upsert = %v, want ErrNotReady", err)
	}
	if _, _, err := m.List(Query{Limit: 10}); !errors.Is(err, ErrNotReady) {
		t.Errorf("List = %v, want ErrNotReady", err)
	}
}

// TestUpsertIsIdempotent checks that the revision is the content's: a
// retry returns the same revision and update time and writes nothing; a
// change gets a new revision; the same content again its old one.
func TestUpsertIsIdempotent(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	first, err := m.Upsert(ctx, service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080"), "")
	if err != nil {
		t.Fatal(err)
	}
	if first.GetRevision() == "" || first.GetUpdateTime() == nil || first.GetId() == 0 || first.GetInternalId() != 0 {
		t.Fatalf("no revision, update time or ID: %v", first)
	}
	// The same content, spelled differently.
	again, err := m.Upsert(ctx, service("::ffff:10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080"), "")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first, again) {
		t.Errorf("retry returned\n%v\nwant\n%v", again, first)
	}
	if n := fake.Calls(bpffake.OpPutServices); n != 1 {
		t.Errorf("%d writes, want 1", n)
	}
	changed, err := m.Upsert(ctx, service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.2:8080"), "")
	if err != nil {
		t.Fatal(err)
	}
	if changed.GetRevision() == first.GetRevision() {
		t.Error("a change kept the revision")
	}
	res, err := m.Apply(ctx, []*datapathv1alpha1.Service{service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.2:8080")}, nil, false)
	if err != nil || res != (Result{Unchanged: 1}) {
		t.Errorf("Apply of the same content = %+v, %v; want 1 unchanged", res, err)
	}
}

// TestExpectedRevision checks ABORTED's sentinel on a stale revision.
func TestExpectedRevision(t *testing.T) {
	m := newManager(t, bpffake.New())
	ctx := t.Context()
	svc := service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080")
	if _, err := m.Upsert(ctx, svc, "0123456789abcdef"); !errors.Is(err, ErrConflict) {
		t.Fatalf("Upsert of a new frontend with a revision = %v, want ErrConflict", err)
	}
	stored, err := m.Upsert(ctx, svc, "")
	if err != nil {
		t.Fatal(err)
	}
	svc.Backends = nil
	if _, err := m.Upsert(ctx, svc, "stale"); !errors.Is(err, ErrConflict) {
		t.Errorf("Upsert with a stale revision = %v, want ErrConflict", err)
	}
	if _, err := m.Delete(ctx, svc.GetFrontend(), "stale"); !errors.Is(err, ErrConflict) {
		t.Errorf("Delete with a stale revision = %v, want ErrConflict", err)
	}
	if _, err := m.Upsert(ctx, svc, stored.GetRevision()); err != nil {
		t.Errorf("Upsert with the stored revision = %v", err)
	}
	// Retries of calls that were applied succeed.
	if _, err := m.Upsert(ctx, svc, stored.GetRevision()); err != nil {
		t.Errorf("retry of an upsert with a revision = %v", err)
	}
	if _, err := m.Delete(ctx, service("10.96.9.9", 80, tcp, clusterIP).GetFrontend(), "0123456789abcdef"); err != nil {
		t.Errorf("Delete of an unknown frontend with a revision = %v", err)
	}
	if got := listAll(t, m); len(got) != 1 || len(got[0].GetBackends()) != 0 {
		t.Errorf("listed %v", got)
	}
}

// TestDelete checks that a delete removes every entry of the frontend and
// frees its IDs, and that deleting an unknown frontend succeeds.
func TestDelete(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	svc := withPolicy(service("0.0.0.0", 30080, tcp, nodePort, "10.0.1.1:8080"))
	stored, err := m.Upsert(ctx, svc, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fake.LBEntries()); n != 2 || stored.GetId() == 0 || stored.GetInternalId() == 0 || stored.GetId() == stored.GetInternalId() {
		t.Fatalf("%d entries, IDs %d and %d; want 2 (one per scope), with IDs of their own", n, stored.GetId(), stored.GetInternalId())
	}
	old, err := m.Delete(ctx, svc.GetFrontend(), stored.GetRevision())
	if err != nil || !proto.Equal(old, stored) {
		t.Fatalf("Delete = %v, %v; want the stored entry", old, err)
	}
	if got := fake.LBEntries(); len(got) != 0 {
		t.Errorf("entries left: %v", got)
	}
	if len(m.ids.used) != 0 {
		t.Errorf("IDs still taken: %v", m.ids.used)
	}
	if old, err := m.Delete(ctx, svc.GetFrontend(), ""); old != nil || err != nil {
		t.Errorf("Delete of an unknown frontend = %v, %v", old, err)
	}
}

// TestReplaceAll checks that replace_all removes every frontend not in the
// batch, and deletes remove theirs.
func TestReplaceAll(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	a := service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080")
	b := service("10.96.0.11", 80, tcp, clusterIP, "10.0.1.2:8080")
	c := service("10.96.0.12", 80, tcp, clusterIP, "10.0.1.3:8080")
	if res, err := m.Apply(ctx, []*datapathv1alpha1.Service{a, b, c}, nil, false); err != nil || res != (Result{Changed: 3}) {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if res, err := m.Apply(ctx, nil, []*datapathv1alpha1.Frontend{c.GetFrontend(), service("10.96.9.9", 1, tcp, clusterIP).GetFrontend()}, false); err != nil || res != (Result{Deleted: 1}) {
		t.Fatalf("Apply of deletes = %+v, %v", res, err)
	}
	d := service("10.96.0.13", 80, tcp, clusterIP, "10.0.1.4:8080")
	res, err := m.Apply(ctx, []*datapathv1alpha1.Service{b, d}, nil, true)
	if err != nil || res != (Result{Changed: 1, Unchanged: 1, Deleted: 1}) {
		t.Fatalf("replace_all = %+v, %v", res, err)
	}
	var got []string
	for _, s := range listAll(t, m) {
		got = append(got, s.GetFrontend().GetAddress())
	}
	if want := []string{"10.96.0.11", "10.96.0.13"}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	var inMaps []string
	for _, e := range fake.LBEntries() {
		inMaps = append(inMaps, e.Key.Addr.String())
	}
	if want := []string{"10.96.0.11", "10.96.0.13"}; !slices.Equal(inMaps, want) {
		t.Errorf("maps hold %v, want %v", inMaps, want)
	}
}

// TestCapacity checks that a batch the service map cannot hold is
// refused with ErrMapFull before anything is written, counting it, while
// one that fits because it also removes frontends goes through.
func TestCapacity(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	var batch []*datapathv1alpha1.Service
	for i := range 3 {
		batch = append(batch, service(fmt.Sprintf("10.96.0.%d", 10+i), 80, tcp, clusterIP, "10.0.1.1:8080"))
	}
	if _, err := m.Apply(ctx, batch, nil, false); err != nil {
		t.Fatal(err)
	}
	fake.SetServiceCapacity(4)
	before := fake.LBEntries()
	// Two more frontends, one with two scopes: 3 + 1 + 2 = 6 > 4.
	more := []*datapathv1alpha1.Service{
		service("10.96.0.20", 80, tcp, clusterIP, "10.0.1.1:8080"),
		withPolicy(service("0.0.0.0", 30080, tcp, nodePort, "10.0.1.1:8080")),
	}
	_, err := m.Apply(ctx, more, nil, false)
	if !errors.Is(err, ErrMapFull) {
		t.Fatalf("Apply = %v, want ErrMapFull", err)
	}
	if !slices.EqualFunc(fake.LBEntries(), before, entryEqual) || fake.Calls(bpffake.OpPutServices) != 1 {
		t.Error("a refused batch changed the maps")
	}
	if got := testutil.ToFloat64(m.metrics.errors.WithLabelValues(reasonMapFull)); got != 1 {
		t.Errorf("map-full errors = %v, want 1", got)
	}
	if len(m.ids.used) != 3 {
		t.Errorf("%d IDs taken, want 3: a refused batch keeps none", len(m.ids.used))
	}
	// replace_all removes the three first: 3 - 3 + 3 = 3 fits.
	if _, err := m.Apply(ctx, more, nil, true); err != nil {
		t.Errorf("replace_all that fits = %v", err)
	}
}

// TestMidBatchFailureRollsBack checks that a map write failing halfway
// through a batch puts back every entry it had changed, and that the
// Manager's view stays the previous one.
func TestMidBatchFailureRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"map full", fmt.Errorf("put: %w", unix.E2BIG), ErrMapFull},
		{"other error", unix.EIO, unix.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := bpffake.New()
			m := newManager(t, fake)
			ctx := t.Context()
			a := service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080")
			b := service("10.96.0.11", 80, udp, clusterIP, "10.0.1.2:8080")
			gone := service("10.96.0.12", 80, tcp, clusterIP, "10.0.1.3:8080")
			if _, err := m.Apply(ctx, []*datapathv1alpha1.Service{a, b, gone}, nil, false); err != nil {
				t.Fatal(err)
			}
			before, listed := fake.LBEntries(), listAll(t, m)
			a2 := service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.9:8080")
			b2 := withPolicy(service("10.96.0.11", 80, udp, lbType, "10.0.1.2:8080"))
			c := service("10.96.0.13", 80, tcp, clusterIP, "10.0.1.4:8080")
			fake.FailPutServicesAfter(2, tc.err)
			_, err := m.Apply(ctx, []*datapathv1alpha1.Service{a2, b2, c}, nil, true)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
			if got := fake.LBEntries(); !slices.EqualFunc(got, before, entryEqual) {
				t.Errorf("entries after the rollback:\n%+v\nwant\n%+v", got, before)
			}
			if after := listAll(t, m); !servicesEqual(listed, after) {
				t.Errorf("listing changed:\n%v\nwant\n%v", after, listed)
			}
			if len(m.ids.used) != 3 {
				t.Errorf("%d IDs taken, want 3", len(m.ids.used))
			}
		})
	}
}

// TestRestoreRoundTrip checks that a new Manager on the same maps lists
// what the old one did: IDs, revisions and update times included.
func TestRestoreRoundTrip(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	lb := withBackends(service("192.0.2.10", 443, tcp, lbType),
		backend("10.0.1.1:8443", 2, active, thisNode), backend("10.0.1.2:8443", 4, active, ""), backend("10.0.1.3:8443", 6, term, ""))
	lb.SourceRanges = []string{"203.0.113.0/24", "198.51.100.0/24"}
	lb.TrafficPolicy = local
	lb.SessionAffinity = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP
	v6 := service("2001:db8::10", 53, udp, clusterIP, "[2001:db8:1::1]:53")
	v6.Backends[0].NodeName = ""
	np := service("0.0.0.0", 30053, udp, nodePort)
	np.ServiceNamespace, np.ServiceName, np.PortName = "", "", ""
	if _, err := m.Apply(ctx, []*datapathv1alpha1.Service{lb, v6, np}, nil, false); err != nil {
		t.Fatal(err)
	}
	want := listAll(t, m)
	restored := newManager(t, fake)
	if got := listAll(t, restored); !servicesEqual(got, want) {
		t.Errorf("restored listing\n%v\nwant\n%v", got, want)
	}
	if !maps.Equal(m.ids.used, restored.ids.used) {
		t.Errorf("restored IDs %v, want %v", restored.ids.used, m.ids.used)
	}
	// The restored Manager keeps the IDs and revisions: a resync with the
	// same content writes nothing.
	puts := fake.Calls(bpffake.OpPutServices)
	res, err := restored.Apply(ctx, []*datapathv1alpha1.Service{lb, v6, np}, nil, true)
	if err != nil || res != (Result{Unchanged: 3}) || fake.Calls(bpffake.OpPutServices) != puts {
		t.Errorf("resync after restore = %+v, %v; want 3 unchanged and no write", res, err)
	}
	// A new frontend gets an ID none of the restored ones has.
	if _, err := restored.Upsert(ctx, service("10.96.0.99", 80, tcp, clusterIP), ""); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, e := range fake.LBEntries() {
		if e.Service.ID == 0 || seen[e.Service.ID] {
			t.Errorf("ID %d twice or 0", e.Service.ID)
		}
		seen[e.Service.ID] = true
	}
}

// TestRestoreFillsInOnResync checks what a restore cannot know (other
// nodes' names, zones, the remote backends of a CLUSTER_IP with a LOCAL
// policy) comes back with the client's resync, without a map write.
func TestRestoreFillsInOnResync(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	svc := withPolicy(withBackends(service("10.96.0.10", 80, tcp, clusterIP),
		backend("10.0.1.1:80", 1, active, thisNode), backend("10.0.1.2:80", 1, active, otherNode)))
	svc.Backends[0].Zone = "z1"
	stored, err := m.Upsert(ctx, svc, "")
	if err != nil {
		t.Fatal(err)
	}
	restored := newManager(t, fake)
	got := listAll(t, restored)
	if len(got) != 1 || len(got[0].GetBackends()) != 1 || got[0].GetRevision() != stored.GetRevision() {
		t.Fatalf("restored %v: want the local backend only, at revision %s", got, stored.GetRevision())
	}
	puts := fake.Calls(bpffake.OpPutServices)
	again, err := restored.Upsert(ctx, svc, "")
	if err != nil || !proto.Equal(again, stored) || fake.Calls(bpffake.OpPutServices) != puts {
		t.Errorf("resync = %v, %v; want %v without a write", again, err, stored)
	}
}

// TestRestoreLeavesOthersEntries checks that entries another writer put
// (HostPort) are neither listed nor removed by replace_all, and their IDs
// are not reused, while an entry of the API's whose metadata is unreadable
// is listed from what its entry holds, and removed by replace_all.
func TestRestoreLeavesOthersEntries(t *testing.T) {
	fake := bpffake.New()
	hostPort := bpfmaps.LBEntry{
		Key:     bpfmaps.LBKey{Addr: mustAddrPort("192.0.2.1:8080").Addr(), Port: 8080, Proto: unix.IPPROTO_TCP},
		Service: bpfmaps.LBService{ID: 1, Type: bpfmaps.LBTypeHostPort},
	}
	garbled := bpfmaps.LBEntry{
		Key: bpfmaps.LBKey{Addr: mustAddrPort("10.96.0.5:80").Addr(), Port: 80, Proto: unix.IPPROTO_TCP},
		Service: bpfmaps.LBService{ID: 2, Type: bpfmaps.LBTypeClusterIP, Meta: []byte{0xff},
			Active: []bpfmaps.LBBackend{{Addr: mustAddrPort("10.0.1.1:8080").Addr(), Port: 8080}}},
	}
	if err := fake.PutServices([]bpfmaps.LBEntry{hostPort, garbled}); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, fake)
	got := listAll(t, m)
	if len(got) != 1 || got[0].GetId() != 2 || len(got[0].GetBackends()) != 1 || got[0].GetRevision() == "" {
		t.Fatalf("listed %v: want the garbled entry, from its backends", got)
	}
	ctx := t.Context()
	if _, err := m.Apply(ctx, []*datapathv1alpha1.Service{service("10.96.0.10", 80, tcp, clusterIP)}, nil, true); err != nil {
		t.Fatal(err)
	}
	entries := fake.LBEntries()
	if len(entries) != 2 || !entryEqual(entries[1], hostPort) || entries[0].Service.ID <= 2 {
		t.Errorf("entries %+v: want the HostPort entry kept, the garbled one gone, a new ID", entries)
	}
	if got := listAll(t, m); len(got) != 1 {
		t.Errorf("listed %v", got)
	}
}

// TestUDPFlowsOfRemovedBackends checks that UDP flows to a backend that
// left its frontend are deleted, and so are the node's UDP sockets the
// socket programs connected to it, and TCP flows and sockets, and those to
// backends that stay or of other frontends, are kept.
func TestUDPFlowsOfRemovedBackends(t *testing.T) {
	fake := bpffake.New()
	m := newManager(t, fake)
	ctx := t.Context()
	dnsUDP := service("10.96.0.10", 53, udp, clusterIP, "10.0.1.1:53", "10.0.1.2:53")
	dnsTCP := service("10.96.0.10", 53, tcp, clusterIP, "10.0.1.1:53", "10.0.1.2:53")
	other := service("10.96.0.11", 53, udp, clusterIP, "10.0.1.1:53")
	gone := service("10.96.0.12", 53, udp, clusterIP, "10.0.1.3:53")
	if _, err := m.Apply(ctx, []*datapathv1alpha1.Service{dnsUDP, dnsTCP, other, gone}, nil, false); err != nil {
		t.Fatal(err)
	}
	idOf := map[string]uint32{}
	for _, e := range fake.LBEntries() {
		idOf[fmt.Sprintf("%s/%d", e.Key.Addr, e.Key.Proto)] = e.Service.ID
	}
	flow := func(fe string, proto uint8, backend string) bpfmaps.Flow {
		f := mustAddrPort(fe)
		return bpfmaps.Flow{
			ServiceID: idOf[fmt.Sprintf("%s/%d", f.Addr(), proto)], Proto: proto,
			Client: mustAddrPort("10.0.2.5:40000"), Frontend: f, Backend: mustAddrPort(backend),
		}
	}
	keep := []bpfmaps.Flow{
		flow("10.96.0.10:53", unix.IPPROTO_UDP, "10.0.1.2:53"), // its backend stays
		flow("10.96.0.10:53", unix.IPPROTO_TCP, "10.0.1.1:53"), // TCP ends on its own
		flow("10.96.0.11:53", unix.IPPROTO_UDP, "10.0.1.1:53"), // another frontend's
	}
	drop := []bpfmaps.Flow{
		flow("10.96.0.10:53", unix.IPPROTO_UDP, "10.0.1.1:53"),
		flow("10.96.0.12:53", unix.IPPROTO_UDP, "10.0.1.3:53"), // its frontend is deleted
	}
	for _, f := range slices.Concat(keep, drop) {
		fake.AddFlow(f)
		fake.AddSocket(f)
	}
	// 10.0.1.2 stays, terminating: its flows stay too.
	dnsUDP.Backends = dnsUDP.Backends[1:]
	dnsUDP.Backends[0].State = term
	dnsTCP.Backends = dnsTCP.Backends[1:]
	if _, err := m.Apply(ctx, []*datapathv1alpha1.Service{dnsUDP, dnsTCP}, []*datapathv1alpha1.Frontend{gone.GetFrontend()}, false); err != nil {
		t.Fatal(err)
	}
	if got := fake.Flows(); !slices.Equal(got, keep) {
		t.Errorf("flows left %+v, want %+v", got, keep)
	}
	if got := fake.Sockets(); !slices.Equal(got, keep) {
		t.Errorf("node sockets left %+v, want %+v", got, keep)
	}
}

// TestList checks order, filters and paging.
func TestList(t *testing.T) {
	m := newManager(t, bpffake.New())
	ctx := t.Context()
	var batch []*datapathv1alpha1.Service
	for _, fe := range []string{"[2001:db8::1]:80", "10.96.0.10:443", "10.96.0.9:80", "10.96.0.10:80", "[::]:30080", "0.0.0.0:30080"} {
		ap := mustAddrPort(fe)
		typ := clusterIP
		if ap.Addr().IsUnspecified() {
			typ = nodePort
		}
		s := service(ap.Addr().String(), uint32(ap.Port()), tcp, typ)
		if ap.Port() == 443 {
			s.ServiceName = "api"
		}
		batch = append(batch, s)
	}
	batch = append(batch, service("10.96.0.10", 80, udp, clusterIP))
	if _, err := m.Apply(ctx, batch, nil, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"0.0.0.0:30080/TCP", "10.96.0.9:80/TCP", "10.96.0.10:80/TCP", "10.96.0.10:80/UDP", "10.96.0.10:443/TCP", "[::]:30080/TCP", "[2001:db8::1]:80/TCP"}
	for _, size := range []int{1, 2, 3, 100} {
		var got []string
		q := Query{Limit: size}
		for pages := 0; ; pages++ {
			page, next, err := m.List(q)
			if err != nil || pages > len(want) {
				t.Fatalf("List = %v (page %d)", err, pages)
			}
			for _, s := range page {
				got = append(got, frontendString(s))
			}
			if next == "" {
				break
			}
			q.After = next
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages of %d: %v, want %v", size, got, want)
		}
	}
	for _, tc := range []struct {
		q    Query
		want int
	}{
		{Query{Namespace: "default", Name: "api"}, 1},
		{Query{Namespace: "kube-system"}, 0},
		{Query{Type: nodePort}, 2},
	} {
		tc.q.Limit = 100
		if got, _, err := m.List(tc.q); err != nil || len(got) != tc.want {
			t.Errorf("List(%+v) = %d services, %v; want %d", tc.q, len(got), err, tc.want)
		}
	}
	if _, _, err := m.List(Query{Name: "api", Limit: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("List by name without namespace = %v, want ErrInvalid", err)
	}
}

func frontendString(s *datapathv1alpha1.Service) string {
	fe, _ := parseFrontend(s.GetFrontend())
	return fe.String()
}

func entryEqual(a, b bpfmaps.LBEntry) bool {
	return a.Key == b.Key && a.Service.ID == b.Service.ID && a.Service.Type == b.Service.Type &&
		a.Service.Affinity == b.Service.Affinity && slices.Equal(a.Service.Active, b.Service.Active) &&
		slices.Equal(a.Service.Terminating, b.Service.Terminating) && string(a.Service.Meta) == string(b.Service.Meta)
}

func servicesEqual(a, b []*datapathv1alpha1.Service) bool {
	return slices.EqualFunc(a, b, func(x, y *datapathv1alpha1.Service) bool { return proto.Equal(x, y) })
}

// TestListPagesStayUnderTheMessageLimit checks that a page of large
// services ends before MaxPageBytes, and the next page goes on from there.
func TestListPagesStayUnderTheMessageLimit(t *testing.T) {
	m := newManager(t, bpffake.New())
	var batch []*datapathv1alpha1.Service
	for i := range 4 {
		s := service(fmt.Sprintf("10.96.0.%d", 10+i), 80, tcp, clusterIP)
		for j := range MaxBackends {
			b := backend(fmt.Sprintf("10.%d.%d.%d:8080", 1+i, j/256, j%256), 1, active, strings.Repeat("n", 60)+"."+strings.Repeat("o", 60)+"."+strings.Repeat("d", 60))
			b.Zone = strings.Repeat("z", maxZoneLen)
			s.Backends = append(s.Backends, b)
		}
		batch = append(batch, s)
	}
	if _, err := m.Apply(t.Context(), batch, nil, false); err != nil {
		t.Fatal(err)
	}
	q := Query{Limit: 1000}
	var seen int
	for pages := 0; ; pages++ {
		page, next, err := m.List(q)
		if err != nil || pages > len(batch) {
			t.Fatalf("List = %v (page %d)", err, pages)
		}
		size := 0
		for _, s := range page {
			size += proto.Size(s)
		}
		if size > MaxPageBytes || len(page) == 0 {
			t.Errorf("page %d: %d services, %d bytes", pages, len(page), size)
		}
		seen += len(page)
		if next == "" {
			break
		}
		q.After = next
	}
	if seen != len(batch) {
		t.Errorf("paged through %d services, want %d", seen, len(batch))
	}
}

// TestPageKeys checks that page keys read back as their frontends, sort
// as the list does, and that anything else is refused.
func TestPageKeys(t *testing.T) {
	fes := []frontend{
		{addr: mustAddrPort("0.0.0.0:1").Addr(), port: 1, proto: 6},
		{addr: mustAddrPort("10.96.0.9:80").Addr(), port: 80, proto: 17},
		{addr: mustAddrPort("10.96.0.10:80").Addr(), port: 80, proto: 6},
		{addr: mustAddrPort("10.96.0.10:80").Addr(), port: 443, proto: 6},
		{addr: mustAddrPort("[::]:80").Addr(), port: 80, proto: 132},
		{addr: mustAddrPort("[2001:db8::1]:80").Addr(), port: 65535, proto: 6},
	}
	for i, fe := range fes {
		if got, ok := parseKey(keyOf(fe)); !ok || got != fe {
			t.Errorf("parseKey(keyOf(%s)) = %v, %v", fe, got, ok)
		}
		if i > 0 && keyOf(fes[i-1]) >= keyOf(fe) {
			t.Errorf("key of %s does not sort after %s's", fe, fes[i-1])
		}
	}
	for _, bad := range []string{"", "4", "40a60009/0050", "40a6000/0050/06", "4zz/0050/06", "60a600009/0050/06", "40a60009/50/06", "40a60009/0050/6", "40a60009/0050/06/"} {
		if fe, ok := parseKey(bad); ok {
			t.Errorf("parseKey(%q) = %s", bad, fe)
		}
	}
	m := newManager(t, bpffake.New())
	if _, _, err := m.List(Query{After: "nope", Limit: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("List after a bad key = %v, want ErrInvalid", err)
	}
}
