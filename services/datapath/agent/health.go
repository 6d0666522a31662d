package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
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

// healthState holds the peers and their last probe results.
type healthState struct {
	mu    sync.Mutex
	peers map[string]*peer
}

// notePeer records a peer's node address and, if known, its health
// endpoint's address; without one it is looked up in IPAM.
func (h *healthState) notePeer(node string, nodeIP, healthIP netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.peers == nil {
		h.peers = map[string]*peer{}
	}
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

// forgetPeer drops a node that has no block left.
func (h *healthState) forgetPeer(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.peers, node)
}

// RunHealth keeps the node's health endpoint in place and probes every peer
// each interval, until ctx ends.
func (a *Agent) RunHealth(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := a.keepHealthEndpoint(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("health endpoint not in place; retrying", "err", err)
		}
		a.probePeers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pinger sends ICMP echo requests on one raw socket and hands each reply to
// the probe waiting for it (by sequence number and source): one socket per
// probe round, not per probe, since every raw ICMP socket gets a copy of
// every ICMP packet the node receives.
type pinger struct {
	c       *icmp.PacketConn
	id      int
	mu      sync.Mutex
	seq     int
	waiting map[int]pingWait
}

type pingWait struct {
	from netip.Addr
	done chan struct{}
}

func newPinger() (*pinger, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, err
	}
	p := &pinger{c: c, id: rand.IntN(0xffff), waiting: map[int]pingWait{}}
	go p.read()
	return p, nil
}

// read dispatches echo replies until the socket is closed.
func (p *pinger) read() {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.c.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1 /* ICMP for IPv4 */, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		src, _ := from.(*net.IPAddr)
		if !ok || e.ID != p.id || src == nil {
			continue
		}
		addr, _ := netip.AddrFromSlice(src.IP)
		p.mu.Lock()
		w, ok := p.waiting[e.Seq]
		if ok && w.from == addr.Unmap() {
			delete(p.waiting, e.Seq)
			close(w.done)
		}
		p.mu.Unlock()
	}
}

func (p *pinger) close() { _ = p.c.Close() }

// ping sends one echo request to ip and waits up to a second for its reply:
// the peer's kernel answers, whether or not its agent runs.
func (p *pinger) ping(ctx context.Context, ip netip.Addr) (time.Duration, error) {
	if !ip.Is4() {
		return 0, errors.New("no IPv4 address known")
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.seq = (p.seq + 1) & 0xffff
	seq := p.seq
	p.waiting[seq] = pingWait{from: ip, done: done}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, seq)
		p.mu.Unlock()
	}()
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("axon-health")}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := p.c.WriteTo(req, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return 0, err
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
		return time.Since(start), nil
	case <-t.C:
		return 0, fmt.Errorf("no echo reply from %s", ip)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (a *Agent) probePeers(ctx context.Context) {
	a.health.mu.Lock()
	names := make([]string, 0, len(a.health.peers))
	targets := map[string]peer{}
	for n, p := range a.health.peers {
		names = append(names, n)
		targets[n] = *p
	}
	a.health.mu.Unlock()
	if len(names) == 0 {
		return
	}
	pg, err := newPinger()
	if err != nil {
		a.log.Warn("health probes: ICMP socket", "err", err)
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
			h := &datapathv1alpha1.PeerHealth{NodeName: n, LastProbeTime: timestamppb.New(now)}
			if p.nodeIP.IsValid() {
				h.NodeIp = p.nodeIP.String()
			}
			var lerr error
			// Look the address up when unknown, and again after a failed
			// probe (the endpoint may have been re-created), at most every
			// lookupInterval.
			if p.lookup && (!p.healthIP.IsValid() || !p.health.GetHealthEndpointReachable()) && !now.Before(p.nextLookup) {
				lctx, cancel := context.WithTimeout(ctx, time.Second)
				if ip, err := a.peerHealthIP(lctx, n); err == nil {
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
				h.HealthIp = p.healthIP.String()
			}
			_, nerr := pg.ping(ctx, p.nodeIP)
			herr := lerr
			if herr == nil {
				var rtt time.Duration
				if rtt, herr = pg.ping(ctx, p.healthIP); herr == nil {
					h.Rtt = durationpb.New(rtt)
				}
			}
			h.NodeReachable, h.HealthEndpointReachable = nerr == nil, herr == nil
			if prev := p.health; prev != nil {
				h.LastSuccessTime = prev.GetLastSuccessTime()
			}
			if herr == nil {
				h.LastSuccessTime = timestamppb.New(now)
			}
			if err := errors.Join(nerr, herr); err != nil {
				h.Message = err.Error()
			}
			p.health = h
			probed[i] = p
		})
	}
	wg.Wait()
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	for i, n := range names {
		if p, ok := a.health.peers[n]; ok {
			p.health = probed[i].health
			if p.lookup {
				p.healthIP, p.nextLookup, p.backoff = probed[i].healthIP, probed[i].nextLookup, probed[i].backoff
			}
		}
	}
}

// Readiness is what CNI STATUS reports: not ready until the node is set
// up, degraded while one of the node's devices is missing. It depends on
// nothing outside the node: a runtime takes any STATUS error for a node
// whose network is not ready, so an IPAM or etcd outage reported here would
// take every node NotReady at once (and could keep IPAM's own pods from
// starting). ADD reports IPAM's unavailability itself (11, try again).
func (a *Agent) Readiness() (datapathv1alpha1.ReadinessState, []string) {
	st := a.NodeStatus()
	return st.GetReadiness(), st.GetReasons()
}

// NodeStatus reports readiness, devices, counts and peer health.
func (a *Agent) NodeStatus() *datapathv1alpha1.NodeStatus {
	st := &datapathv1alpha1.NodeStatus{Readiness: datapathv1alpha1.ReadinessState_READINESS_STATE_READY, BpfLoaded: a.bpf != nil}
	if err := a.Ready(); err != nil {
		st.Readiness = datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY
		st.Reasons = append(st.Reasons, err.Error())
	}
	devices := []string{HostDevice, NetDevice}
	if a.cfg.RoutingMode == ModeTunnel {
		devices = append(devices, tunnelDevice(a.cfg.TunnelProtocol))
	}
	for _, name := range devices {
		ds := &datapathv1alpha1.DeviceStatus{Name: name}
		if l, err := a.plumber.Node.LinkByName(name); err == nil {
			ds.Present, ds.Ifindex, ds.Mtu = true, uint32(l.Attrs().Index), uint32(l.Attrs().MTU)
			ds.Up = l.Attrs().Flags&net.FlagUp != 0
			ds.ProgramAttached = name == tunnelDevice(a.cfg.TunnelProtocol) && a.bpf != nil
		} else {
			ds.Message = err.Error()
			if st.Readiness == datapathv1alpha1.ReadinessState_READINESS_STATE_READY {
				st.Readiness = datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED
				st.Reasons = append(st.Reasons, "device "+name+" missing")
			}
		}
		st.Devices = append(st.Devices, ds)
	}
	if eps, err := a.store.list(); err == nil {
		st.EndpointCount = uint32(len(eps))
	}
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	names := make([]string, 0, len(a.health.peers))
	for n := range a.health.peers {
		names = append(names, n)
	}
	slices.Sort(names)
	st.RemoteNodeCount = uint32(len(names))
	for _, n := range names {
		if h := a.health.peers[n].health; h != nil {
			st.Peers = append(st.Peers, h)
		} else {
			st.Peers = append(st.Peers, &datapathv1alpha1.PeerHealth{NodeName: n, Message: "not probed yet"})
		}
	}
	return st
}
