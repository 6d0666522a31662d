package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// HealthPort is where every node answers health probes, on all its
// addresses: probing a peer's underlay address tests the node network,
// probing its router IP (its health address) tests the pod network path
// (overlay or native routes) end to end.
const HealthPort = 4240

// peer is another node as the health prober knows it.
type peer struct {
	nodeIP, healthIP netip.Addr
	health           *datapathv1alpha1.PeerHealth
}

// healthState holds the peers and their last probe results.
type healthState struct {
	mu    sync.Mutex
	peers map[string]*peer
}

// notePeer records a peer's addresses, learned from a block event.
func (h *healthState) notePeer(node string, nodeIP, healthIP netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.peers == nil {
		h.peers = map[string]*peer{}
	}
	p, ok := h.peers[node]
	if !ok {
		p = &peer{}
		h.peers[node] = p
	}
	if nodeIP.IsValid() {
		p.nodeIP = nodeIP
	}
	if healthIP.IsValid() {
		p.healthIP = healthIP
	}
}

// forgetPeer drops a node that has no block left.
func (h *healthState) forgetPeer(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.peers, node)
}

// RunHealth answers probes on HealthPort and probes every peer each
// interval, until ctx ends.
func (a *Agent) RunHealth(ctx context.Context, interval time.Duration) error {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(HealthPort))
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok\n"))
			_ = c.Close()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.probePeers(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func probe(ctx context.Context, ip netip.Addr) (time.Duration, error) {
	if !ip.IsValid() {
		return 0, errors.New("no address known")
	}
	start := time.Now()
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, HealthPort).String())
	if err != nil {
		return 0, err
	}
	_ = c.Close()
	return time.Since(start), nil
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
	for i, n := range names {
		wg.Go(func() {
			p := targets[n]
			now := time.Now()
			h := &datapathv1alpha1.PeerHealth{NodeName: n, LastProbeTime: timestamppb.New(now)}
			if p.nodeIP.IsValid() {
				h.NodeIp = p.nodeIP.String()
			}
			if p.healthIP.IsValid() {
				h.HealthIp = p.healthIP.String()
			}
			_, nerr := probe(ctx, p.nodeIP)
			rtt, herr := probe(ctx, p.healthIP)
			h.NodeReachable, h.HealthEndpointReachable = nerr == nil, herr == nil
			if herr == nil {
				h.Rtt = durationpb.New(rtt)
			}
			if prev := p.health; prev != nil {
				h.LastSuccessTime = prev.GetLastSuccessTime()
			}
			if nerr == nil && herr == nil {
				h.LastSuccessTime = timestamppb.New(now)
			} else {
				h.Message = errors.Join(nerr, herr).Error()
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
		}
	}
}

// Readiness is what CNI STATUS reports: not ready while the node is not set
// up or IPAM, which every ADD needs, does not answer; degraded while one of
// the node's devices is missing.
func (a *Agent) Readiness(ctx context.Context) (datapathv1alpha1.ReadinessState, []string) {
	if err := a.Ready(); err != nil {
		return datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY, []string{err.Error()}
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := a.ipam.GetNode(pctx, &ipamv1alpha1.GetNodeRequest{Name: a.cfg.NodeName}); err != nil {
		return datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY, []string{"IPAM: " + status.Convert(err).Message()}
	}
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
