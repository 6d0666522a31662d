package health

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
)

// echoes answers pings from the addresses in up, without sockets.
type echoes struct {
	mu    sync.Mutex
	up    map[netip.Addr]bool
	pings map[netip.Addr]int
}

func (e *echoes) ping(_ context.Context, ip netip.Addr) (time.Duration, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pings[ip]++
	if !e.up[ip] {
		return 0, errors.New("no echo reply")
	}
	return time.Millisecond, nil
}

func (e *echoes) close() {}

var (
	peerIP   = netip.MustParseAddr("192.0.2.20")
	healthIP = netip.MustParseAddr("10.0.2.2") // node-b's health endpoint, the first address of its block
)

func newTestProber(t *testing.T) (*Prober, *fakeipam.IPAM, *echoes) {
	t.Helper()
	ipam := fakeipam.New(fakeipam.Config{Node: "node-b", Blocks: []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24")}})
	if _, err := ipam.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: "node-b"}, AllowMissing: true}); err != nil {
		t.Fatal(err)
	}
	e := &echoes{up: map[netip.Addr]bool{peerIP: true, healthIP: true}, pings: map[netip.Addr]int{}}
	p := NewProber(ipam, slog.New(slog.DiscardHandler))
	p.listen = func() (echoer, error) { return e, nil }
	return p, ipam, e
}

// allocateHealth gives node-b's health endpoint its address in IPAM.
func allocateHealth(t *testing.T, ipam *fakeipam.IPAM) {
	t.Helper()
	resp, err := ipam.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: ContainerID("node-b"), InterfaceName: "eth0"}, Node: "node-b",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetAllocation().GetAddresses()[0].GetIp(); got != healthIP.String() {
		t.Fatalf("health endpoint got %s, want %s", got, healthIP)
	}
}

func TestProberPeers(t *testing.T) {
	p, ipam, e := newTestProber(t)
	allocateHealth(t, ipam)
	if got := p.Peers(); len(got) != 0 {
		t.Fatalf("Peers = %v, want none", got)
	}
	p.NotePeer("node-b", peerIP, netip.Addr{})
	p.NotePeer("node-c", netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("10.0.3.2")) // API-given: named health IP
	got := p.Peers()
	if len(got) != 2 || got[0].GetNodeName() != "node-b" || got[0].GetMessage() != "not probed yet" {
		t.Fatalf("Peers before a probe = %v", got)
	}
	p.Probe(t.Context())
	got = p.Peers()
	b, c := got[0], got[1]
	if !b.GetNodeReachable() || !b.GetHealthEndpointReachable() || b.GetHealthIp() != healthIP.String() || b.GetLastSuccessTime() == nil {
		t.Errorf("node-b = %v; want both reachable via %s", b, healthIP)
	}
	if c.GetNodeReachable() || c.GetHealthEndpointReachable() || c.GetHealthIp() != "10.0.3.2" || c.GetMessage() == "" {
		t.Errorf("node-c = %v; want unreachable with a message, health IP 10.0.3.2", c)
	}
	if n := ipam.Calls("GetAllocation"); n != 1 {
		t.Errorf("GetAllocation calls %d, want 1 (node-b only: node-c's health IP was given)", n)
	}
	if e.pings[healthIP] != 1 || e.pings[peerIP] != 1 {
		t.Errorf("pings %v, want one each to node-b's addresses", e.pings)
	}
	// A new node address is taken; the looked-up health IP stays.
	p.NotePeer("node-b", netip.MustParseAddr("192.0.2.21"), netip.Addr{})
	p.Probe(t.Context())
	if b := p.Peers()[0]; b.GetNodeIp() != "192.0.2.21" || b.GetHealthIp() != healthIP.String() || b.GetNodeReachable() {
		t.Errorf("node-b after an address change = %v", b)
	}
	if n := ipam.Calls("GetAllocation"); n != 1 {
		t.Errorf("GetAllocation calls %d, want still 1 while the health endpoint answers", n)
	}
	p.ForgetPeer("node-b")
	p.ForgetPeer("node-x") // unknown: ignored
	if got := p.Peers(); len(got) != 1 || got[0].GetNodeName() != "node-c" {
		t.Errorf("Peers after ForgetPeer = %v, want node-c only", got)
	}
}

// TestProberLookupBackoff: a failed lookup of a peer's health endpoint
// address is retried after a delay that doubles up to the cap, and an
// answer resets it.
func TestProberLookupBackoff(t *testing.T) {
	p, ipam, _ := newTestProber(t)
	p.NotePeer("node-b", peerIP, netip.Addr{})
	var down atomic.Bool
	down.Store(true)
	ipam.SetFail(func(method string) error {
		if method == "GetAllocation" && down.Load() {
			return status.Error(codes.Unavailable, "ipam down")
		}
		return nil
	})
	backoff := func() time.Duration {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.peers["node-b"].backoff
	}
	// Time passes: the next lookup is due.
	due := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.peers["node-b"].nextLookup = time.Time{}
	}
	want := time.Second
	for i := range 9 {
		p.Probe(t.Context())
		if got := backoff(); got != want {
			t.Fatalf("after failure %d: backoff %v, want %v", i+1, got, want)
		}
		if ph := p.Peers()[0]; ph.GetHealthEndpointReachable() || ph.GetMessage() == "" || !ph.GetNodeReachable() {
			t.Errorf("after failure %d: %v; want the node reachable, its health endpoint not, with a message", i+1, ph)
		}
		// Not due yet: no lookup.
		calls := ipam.Calls("GetAllocation")
		p.Probe(t.Context())
		if ipam.Calls("GetAllocation") != calls {
			t.Fatalf("after failure %d: looked up again before the backoff passed", i+1)
		}
		due()
		want = min(2*want, maxLookupBackoff)
	}
	if backoff() != maxLookupBackoff {
		t.Errorf("backoff %v, want the cap %v", backoff(), maxLookupBackoff)
	}
	down.Store(false)
	allocateHealth(t, ipam)
	p.Probe(t.Context())
	if got := backoff(); got != 0 {
		t.Errorf("backoff after an answer %v, want 0", got)
	}
	if ph := p.Peers()[0]; !ph.GetHealthEndpointReachable() || ph.GetHealthIp() != healthIP.String() {
		t.Errorf("after the answer: %v", ph)
	}
}
