package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/statefile"
)

// normalizeRemoteNode validates a remote node and returns it in canonical
// form (parsed addresses and CIDRs re-spelled).
func (m *Manager) normalizeRemoteNode(in *datapathv1alpha1.RemoteNode) (*datapathv1alpha1.RemoteNode, []netip.Prefix, error) {
	if in.GetName() == "" {
		return nil, nil, fmt.Errorf("%w: name is required", ErrInvalid)
	}
	if in.GetName() == m.cfg.NodeName {
		return nil, nil, fmt.Errorf("%w: %q is this node", ErrInvalid, in.GetName())
	}
	out := &datapathv1alpha1.RemoteNode{Name: in.GetName()}
	var errs []error
	addrs := func(list []string, field string) []string {
		var res []string
		for _, s := range list {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not an address", field, s))
				continue
			}
			res = append(res, ip.Unmap().String())
		}
		return res
	}
	out.NodeIps = addrs(in.GetNodeIps(), "node_ips")
	out.HealthIps = addrs(in.GetHealthIps(), "health_ips")
	var cidrs []netip.Prefix
	for _, s := range in.GetPodCidrs() {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Masked() != p {
			errs = append(errs, fmt.Errorf("pod_cidrs: %q is not a canonical CIDR", s))
			continue
		}
		cidrs = append(cidrs, p)
		out.PodCidrs = append(out.PodCidrs, p.String())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(out.NodeIps) == 0 && len(out.PodCidrs) > 0 {
		return nil, nil, fmt.Errorf("%w: node_ips is required to route pod_cidrs", ErrInvalid)
	}
	return out, cidrs, nil
}

// UpsertRemoteNode creates or replaces a remote node given by API and
// routes its pod CIDRs.
func (m *Manager) UpsertRemoteNode(in *datapathv1alpha1.RemoteNode, expectedRev string) (*datapathv1alpha1.RemoteNode, error) {
	if err := m.ready(); err != nil {
		// Routes need the node's router IPs as their source.
		return nil, fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	n, cidrs, err := m.normalizeRemoteNode(in)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.manual[n.GetName()]
	if expectedRev != "" && expectedRev != old.GetRevision() {
		return nil, fmt.Errorf("%w: remote node %q is at revision %q, not %q", ErrConflict, n.GetName(), old.GetRevision(), expectedRev)
	}
	if old != nil && slices.Equal(old.GetNodeIps(), n.GetNodeIps()) && slices.Equal(old.GetPodCidrs(), n.GetPodCidrs()) && slices.Equal(old.GetHealthIps(), n.GetHealthIps()) {
		m.notePeer(old)
		return proto.CloneOf(old), nil
	}
	rev, _ := strconv.ParseInt(old.GetRevision(), 10, 64)
	n.Revision = strconv.FormatInt(rev+1, 10)
	n.UpdateTime = timestamppb.Now()
	next := maps.Clone(m.manual)
	next[n.GetName()] = n
	if err := m.saveRemoteNodes(next); err != nil {
		return nil, fmt.Errorf("record remote node %q: %w", n.GetName(), err)
	}
	m.manual = next
	touched := map[netip.Prefix]bool{}
	for _, p := range cidrs {
		touched[p] = true
	}
	for _, s := range old.GetPodCidrs() {
		if p, err := netip.ParsePrefix(s); err == nil {
			touched[p] = true
		}
	}
	for p := range touched {
		m.reconcile(p)
	}
	m.notePeer(n)
	return proto.CloneOf(n), nil
}

// notePeer tells the prober of an API-given node with a health endpoint.
// It is told on every upsert, changed or not, and on restore: a restarted
// agent's prober knows only what it is told again.
func (m *Manager) notePeer(n *datapathv1alpha1.RemoteNode) {
	if len(n.GetHealthIps()) == 0 || len(n.GetNodeIps()) == 0 {
		return
	}
	nip, _ := netip.ParseAddr(n.GetNodeIps()[0])
	hip, _ := netip.ParseAddr(n.GetHealthIps()[0])
	m.peers.NotePeer(n.GetName(), nip, hip)
}

// DeleteRemoteNode removes an API-given remote node; blocks IPAM still
// reports for it stay routed. A missing node is success (nil).
func (m *Manager) DeleteRemoteNode(name, expectedRev string) (*datapathv1alpha1.RemoteNode, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.manual[name]
	if !ok {
		return nil, nil
	}
	if expectedRev != "" && expectedRev != old.GetRevision() {
		return nil, fmt.Errorf("%w: remote node %q is at revision %q, not %q", ErrConflict, name, old.GetRevision(), expectedRev)
	}
	next := maps.Clone(m.manual)
	delete(next, name)
	if err := m.saveRemoteNodes(next); err != nil {
		return nil, fmt.Errorf("record the removal of remote node %q: %w", name, err)
	}
	m.manual = next
	for _, s := range old.GetPodCidrs() {
		if p, err := netip.ParsePrefix(s); err == nil {
			m.reconcile(p)
		}
	}
	// The prober stops probing the node, unless the block watch still
	// reports it.
	for _, rb := range m.watched {
		if rb.node == name {
			return old, nil
		}
	}
	m.peers.ForgetPeer(name)
	return old, nil
}

// ListRemoteNodes returns every remote node in name order: the union of the
// API's and IPAM's, with the pod CIDRs routed for each.
func (m *Manager) ListRemoteNodes() []*datapathv1alpha1.RemoteNode {
	m.mu.Lock()
	defer m.mu.Unlock()
	byName := map[string]*datapathv1alpha1.RemoteNode{}
	for name, n := range m.manual {
		byName[name] = proto.CloneOf(n)
	}
	for p, rb := range m.watched {
		n, ok := byName[rb.node]
		if !ok {
			n = &datapathv1alpha1.RemoteNode{Name: rb.node}
			byName[rb.node] = n
		}
		if !slices.Contains(n.NodeIps, rb.nodeIP.String()) {
			n.NodeIps = append(n.NodeIps, rb.nodeIP.String())
		}
		if !slices.Contains(n.PodCidrs, p.String()) {
			n.PodCidrs = append(n.PodCidrs, p.String())
		}
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]*datapathv1alpha1.RemoteNode, 0, len(names))
	for _, name := range names {
		slices.Sort(byName[name].PodCidrs)
		out = append(out, byName[name])
	}
	return out
}

// remoteNodesFile, in the state directory, keeps the API-given remote nodes
// across restarts (not a .json name: those are endpoint records).
const remoteNodesFile = "remote-nodes.state"

// saveRemoteNodes records the API-given remote nodes, replacing the file
// whole.
func (m *Manager) saveRemoteNodes(nodes map[string]*datapathv1alpha1.RemoteNode) error {
	var list []json.RawMessage
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		b, err := protojson.Marshal(nodes[name])
		if err != nil {
			return err
		}
		list = append(list, b)
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return statefile.WriteAtomic(filepath.Join(m.cfg.StateDir, remoteNodesFile), b)
}

// RestoreNodes loads the API-given remote nodes recorded before a
// restart, routes their blocks and tells the prober of them.
func (m *Manager) RestoreNodes() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(m.cfg.StateDir, remoteNodesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		// A damaged file must not keep the node from starting: the API's
		// clients upsert their nodes again.
		m.log.Error("remote nodes file unreadable; starting without API-given remote nodes", "file", remoteNodesFile, "err", err)
		return nil
	}
	for _, raw := range list {
		n := &datapathv1alpha1.RemoteNode{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, n); err != nil || n.GetName() == "" {
			m.log.Error("skipping an unreadable remote node", "file", remoteNodesFile, "err", err)
			continue
		}
		m.manual[n.GetName()] = n
		for _, s := range n.GetPodCidrs() {
			if p, err := netip.ParsePrefix(s); err == nil {
				m.reconcile(p)
			}
		}
		m.notePeer(n)
	}
	return nil
}
