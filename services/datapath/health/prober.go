// Package health owns the node's health: its health endpoint (a namespace
// of its own wired like a pod, which peers probe) and the prober that pings
// every peer's node address and health endpoint.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// peer is another node as the health prober knows it.
type peer struct {
	nodeIP, healthIP netip.Addr
	// lookup says the health endpoint's address comes from IPAM (peers
	// learned from the block watch), asked again after a failed probe;
	// API-given peers name theirs.
	lookup bool
	// nextLookup is when IPAM may be asked again: lookupInterval after an
	// answer, and after failures a delay that doubles up to maxLookupBackoff,
	// so an outage does not multiply into IPAM (and etcd) load.
	nextLookup time.Time
	backoff    time.Duration
	health     *datapathv1alpha1.PeerHealth
}

const (
	lookupInterval   = 30 * time.Second
	maxLookupBackoff = 2 * time.Minute
)

// Allocations looks up IPAM allocations: a peer's health endpoint address.
type Allocations interface {
	GetAllocation(ctx context.Context, in *ipamv1alpha1.GetAllocationRequest, opts ...grpc.CallOption) (*ipamv1alpha1.GetAllocationResponse, error)
}

// echoer sends ICMP echo requests for one probe round (*pinger); the
// prober's tests answer without raw sockets.
type echoer interface {
	ping(ctx context.Context, ip netip.Addr) (time.Duration, error)
	close()
}

// Prober holds the peers and their last probe results.
type Prober struct {
	ipam   Allocations
	log    *slog.Logger
	listen func() (echoer, error) // opens a probe round's socket

	mu    sync.Mutex
	peers map[string]*peer
}

// NewProber returns a Prober that finds peers' health endpoints in ipam.
func NewProber(ipam Allocations, log *slog.Logger) *Prober {
	listen := func() (echoer, error) {
		p, err := newPinger()
		if err != nil {
			return nil, err // not a nil *pinger in the interface
		}
		return p, nil
	}
	return &Prober{ipam: ipam, log: log, listen: listen, peers: map[string]*peer{}}
}

// NotePeer records a peer's node address and, if known, its health
// endpoint's address; without one it is looked up in IPAM.
func (h *Prober) NotePeer(node string, nodeIP, healthIP netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.peers[node]
	if !ok {
		p = &peer{lookup: true}
		h.peers[node] = p
	}
	if nodeIP.IsValid() {
		p.nodeIP = nodeIP
	}
	if healthIP.IsValid() {
		p.healthIP, p.lookup = healthIP, false
	}
}

// ForgetPeer drops a node that has no block left.
func (h *Prober) ForgetPeer(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.peers, node)
}

// Probe pings every peer once, concurrently, and keeps the results.
func (h *Prober) Probe(ctx context.Context) {
	h.mu.Lock()
	names := make([]string, 0, len(h.peers))
	targets := map[string]peer{}
	for n, p := range h.peers {
		names = append(names, n)
		targets[n] = *p
	}
	h.mu.Unlock()
	if len(names) == 0 {
		return
	}
	pg, err := h.listen()
	if err != nil {
		h.log.Warn("health probes: ICMP socket", "err", err)
		return
	}
	defer pg.close()
	// Each probe works on a copy of its peer; what it learns is copied back
	// below.
	var wg sync.WaitGroup
	probed := make([]peer, len(names))
	for i, n := range names {
		wg.Go(func() {
			p := targets[n]
			now := time.Now()
			ph := &datapathv1alpha1.PeerHealth{NodeName: n, LastProbeTime: timestamppb.New(now)}
			if p.nodeIP.IsValid() {
				ph.NodeIp = p.nodeIP.String()
			}
			var lerr error
			// Look the address up when unknown, and again after a failed
			// probe (the endpoint may have been re-created), at most every
			// lookupInterval.
			if p.lookup && (!p.healthIP.IsValid() || !p.health.GetHealthEndpointReachable()) && !now.Before(p.nextLookup) {
				lctx, cancel := context.WithTimeout(ctx, time.Second)
				if ip, err := h.peerHealthIP(lctx, n); err == nil {
					p.healthIP = ip
					p.backoff, p.nextLookup = 0, now.Add(lookupInterval)
				} else {
					lerr = fmt.Errorf("health endpoint address: %s", status.Convert(err).Message())
					p.backoff = min(max(2*p.backoff, time.Second), maxLookupBackoff)
					p.nextLookup = now.Add(p.backoff)
				}
				cancel()
			}
			if p.healthIP.IsValid() {
				ph.HealthIp = p.healthIP.String()
			}
			_, nerr := pg.ping(ctx, p.nodeIP)
			herr := lerr
			if herr == nil {
				var rtt time.Duration
				if rtt, herr = pg.ping(ctx, p.healthIP); herr == nil {
					ph.Rtt = durationpb.New(rtt)
				}
			}
			ph.NodeReachable, ph.HealthEndpointReachable = nerr == nil, herr == nil
			if prev := p.health; prev != nil {
				ph.LastSuccessTime = prev.GetLastSuccessTime()
			}
			if herr == nil {
				ph.LastSuccessTime = timestamppb.New(now)
			}
			if err := errors.Join(nerr, herr); err != nil {
				ph.Message = err.Error()
			}
			p.health = ph
			probed[i] = p
		})
	}
	wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, n := range names {
		if p, ok := h.peers[n]; ok {
			p.health = probed[i].health
			if p.lookup {
				p.healthIP, p.nextLookup, p.backoff = probed[i].healthIP, probed[i].nextLookup, probed[i].backoff
			}
		}
	}
}

// Peers returns the peers' last probe results in node name order.
func (h *Prober) Peers() []*datapathv1alpha1.PeerHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.peers))
	for n := range h.peers {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*datapathv1alpha1.PeerHealth, 0, len(names))
	for _, n := range names {
		if ph := h.peers[n].health; ph != nil {
			out = append(out, ph)
		} else {
			out = append(out, &datapathv1alpha1.PeerHealth{NodeName: n, Message: "not probed yet"})
		}
	}
	return out
}

// peerHealthIP asks IPAM for the IPv4 address of a peer's health endpoint.
func (h *Prober) peerHealthIP(ctx context.Context, node string) (netip.Addr, error) {
	resp, err := h.ipam.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: ContainerID(node), InterfaceName: "eth0"},
	}})
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ad := range resp.GetAllocation().GetAddresses() {
		if ip, err := netip.ParseAddr(ad.GetIp()); err == nil && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("health endpoint has no IPv4 address")
}
