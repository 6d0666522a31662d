package allocator

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// fakeClock is a settable clock for hold expiry.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func stickyReq(node, cid, key string) *ipamv1alpha1.AllocateIPRequest {
	r := allocReq(node, cid)
	r.StickyKey = key
	r.StickyHold = durationpb.New(time.Hour)
	return r
}

func TestStickyHoldRestoresAddress(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	a := newAllocator(t, newClient(t), testRoot(t), func(c *Config) { c.Now = clock.Now })
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 0, "10.110.0.0/16"))
	mustNode(t, a, "n1")
	mustNode(t, a, "n2")

	first, err := a.AllocateIP(ctx, stickyReq("n1", "pod-a", "default/web-0"))
	if err != nil || first.GetStickyRestored() {
		t.Fatalf("first sticky allocation = %v, %v", first, err)
	}
	ip := first.GetAllocation().GetAddresses()[0].GetIp()

	// The old pod is still live: its successor must wait.
	_, err = a.AllocateIP(ctx, stickyReq("n1", "pod-b", "default/web-0"))
	wantErr(t, err, ErrConflict, "in use by the live allocation")

	_, holds, err := a.Release(ctx, Handle{"pod-a", "eth0"}, 0, false)
	if err != nil || len(holds) != 1 || holds[0].GetIp() != ip {
		t.Fatalf("release = %v, %v; want a hold of %s", holds, err, ip)
	}
	// A plain allocation cannot take the held address.
	plain := allocReq("n1", "intruder")
	plain.RequestedIps = []string{ip}
	_, err = a.Allocate(ctx, plain)
	wantErr(t, err, ErrExists, "held")

	second, err := a.AllocateIP(ctx, stickyReq("n1", "pod-b", "default/web-0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := second.GetAllocation().GetAddresses()[0].GetIp(); got != ip || !second.GetStickyRestored() {
		t.Fatalf("re-created pod got %s (restored %v), want %s restored", got, second.GetStickyRestored(), ip)
	}
	if res, _, err := a.ListReservations(ctx, "", "", "", 100); err != nil || len(res) != 0 {
		t.Fatalf("reservations after restore = %v, %v; want none", res, err)
	}

	// Released again and moved to a node whose blocks do not hold the
	// address: a fresh address, and the hold is dropped.
	if _, _, err := a.Release(ctx, Handle{"pod-b", "eth0"}, 0, false); err != nil {
		t.Fatal(err)
	}
	moved, err := a.AllocateIP(ctx, stickyReq("n2", "pod-c", "default/web-0"))
	if err != nil {
		t.Fatal(err)
	}
	if moved.GetStickyRestored() || moved.GetAllocation().GetAddresses()[0].GetIp() == ip {
		t.Fatalf("pod on another node got %v", moved)
	}
	if res, _, _ := a.ListReservations(ctx, "", "default/web-0", "", 100); len(res) != 0 {
		t.Fatalf("hold not dropped: %v", res)
	}
	// discard_sticky_hold frees the address at once.
	if _, holds, err := a.Release(ctx, Handle{"pod-c", "eth0"}, 0, true); err != nil || len(holds) != 0 {
		t.Fatalf("release with discard = %v, %v", holds, err)
	}
}

func TestHoldExpiry(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	a := newAllocator(t, newClient(t), testRoot(t), func(c *Config) { c.Now = clock.Now })
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 0, "10.111.0.0/16"))
	mustNode(t, a, "n1")
	first := mustAlloc(t, a, stickyReq("n1", "pod-a", "ns/db-0"))
	if _, _, err := a.Release(ctx, Handle{"pod-a", "eth0"}, 0, false); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * time.Hour)
	if err := a.sweepHolds(ctx); err != nil {
		t.Fatal(err)
	}
	if res, _, _ := a.ListReservations(ctx, "", "", "", 100); len(res) != 0 {
		t.Fatalf("expired hold still listed: %v", res)
	}
	req := allocReq("n1", "other")
	req.RequestedIps = []string{first.GetAddresses()[0].GetIp()}
	if _, err := a.Allocate(ctx, req); err != nil {
		t.Fatalf("address of an expired hold not free: %v", err)
	}
}

func TestReserveIP(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 0, "10.112.0.0/16"))
	mustNode(t, a, "n1")
	taken := mustAlloc(t, a, allocReq("n1", "c1")).GetAddresses()[0]

	res, err := a.ReserveIP(ctx, "10.112.200.9", "ns/web-1", nil)
	if err != nil || res.GetKind() != ipamv1alpha1.ReservationKind_RESERVATION_KIND_MANUAL {
		t.Fatalf("ReserveIP = %v, %v", res, err)
	}
	if _, err := a.ReserveIP(ctx, "10.112.200.9", "ns/web-1", nil); err != nil {
		t.Fatalf("repeat ReserveIP: %v", err)
	}
	tests := []struct {
		name, ip, key string
		err           error
		contains      string
	}{
		{"held for another key", "10.112.200.9", "other", ErrExists, "held for key"},
		{"allocated", taken.GetIp(), "k", ErrExists, "allocated"},
		{"router IP", taken.GetGateway(), "k", ErrPrecondition, "router IP"},
		{"key holds another", "10.112.200.10", "ns/web-1", ErrPrecondition, "already holds"},
		{"outside pools", "192.0.2.1", "k", ErrPrecondition, "in no pool"},
		{"network address", "10.112.0.0", "k", ErrPrecondition, "network"},
		{"empty key", "10.112.200.11", "", ErrInvalid, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.ReserveIP(ctx, tt.ip, tt.key, nil)
			wantErr(t, err, tt.err, tt.contains)
		})
	}
	// The reservation's key gets the address as a sticky allocation.
	got, err := a.AllocateIP(ctx, stickyReq("n1", "web-1", "ns/web-1"))
	if err != nil || got.GetAllocation().GetAddresses()[0].GetIp() != "10.112.200.9" || !got.GetStickyRestored() {
		t.Fatalf("allocation with the reserved key = %v, %v", got, err)
	}
	if _, err := a.ReserveIP(ctx, "10.112.200.20", "ns/web-2", nil); err != nil {
		t.Fatal(err)
	}
	dropped, err := a.UnreserveIP(ctx, "", "ns/web-2")
	if err != nil || len(dropped) != 1 {
		t.Fatalf("UnreserveIP = %v, %v", dropped, err)
	}
	if again, err := a.UnreserveIP(ctx, "10.112.200.20", ""); err != nil || len(again) != 0 {
		t.Fatalf("second UnreserveIP = %v, %v", again, err)
	}
}
