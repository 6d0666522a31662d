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
	health *datapathv1alpha1.PeerHealth
}

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
	ready := false
	for {
		if !ready {
			if err := a.ensureHealthEndpoint(ctx); err != nil {
				if ctx.Err() == nil {
					a.log.Warn("health endpoint not in place; retrying", "err", err)
				}
			} else {
				ready = true
			}
		}
		a.probePeers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping sends one ICMP echo to ip and waits up to a second for its reply:
// the peer's kernel answers, whether or not its agent runs.
func ping(ctx context.Context, ip netip.Addr) (time.Duration, error) {
	if !ip.Is4() {
		return 0, errors.New("no IPv4 address known")
	}
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	id, seq := rand.IntN(0xffff), 1
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("axon-health")}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetDeadline(deadline); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.WriteTo(req, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no echo reply from %s: %w", ip, err)
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(ip.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(1 /* ICMP for IPv4 */, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
			return time.Since(start), nil
		}
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
	var wg sync.WaitGroup
	results := make([]*datapathv1alpha1.PeerHealth, len(names))
	healthIPs := make([]netip.Addr, len(names))
	for i, n := range names {
		wg.Go(func() {
			p := targets[n]
			now := time.Now()
			h := &datapathv1alpha1.PeerHealth{NodeName: n, LastProbeTime: timestamppb.New(now)}
			if p.nodeIP.IsValid() {
				h.NodeIp = p.nodeIP.String()
			}
			var lerr error
			if p.lookup && (!p.healthIP.IsValid() || !p.health.GetHealthEndpointReachable()) {
				lctx, cancel := context.WithTimeout(ctx, time.Second)
				if ip, err := a.peerHealthIP(lctx, n); err == nil {
					p.healthIP = ip
				} else {
					lerr = fmt.Errorf("health endpoint address: %s", status.Convert(err).Message())
				}
				cancel()
			}
			healthIPs[i] = p.healthIP
			if p.healthIP.IsValid() {
				h.HealthIp = p.healthIP.String()
			}
			_, nerr := ping(ctx, p.nodeIP)
			herr := lerr
			if herr == nil {
				var rtt time.Duration
				if rtt, herr = ping(ctx, p.healthIP); herr == nil {
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
			results[i] = h
		})
	}
	wg.Wait()
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	for i, n := range names {
		if p, ok := a.health.peers[n]; ok {
			p.health = results[i]
			if p.lookup && healthIPs[i].IsValid() {
				p.healthIP = healthIPs[i]
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
