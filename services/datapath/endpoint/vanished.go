package endpoint

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
)

// LinkEvents tells of links deleted in the node's namespace (nl.LinkWatcher:
// nl.Linux and nlfake.Fake implement it).
type LinkEvents interface {
	// LinkDeletions delivers the names of links deleted from now on, until
	// ctx ends or the subscription fails; then the channel is closed.
	LinkDeletions(ctx context.Context) (<-chan string, error)
}

// RunVanished removes, until ctx ends, the endpoints whose host veth
// disappears while the agent runs (their DEL went elsewhere, someone deleted
// the link, the pod's namespace went), so their map entries, pod key and
// IPAM allocation are not kept until the next restart: at once for each
// deletion events reports, and every interval for all of them, since events
// can be lost (a netlink socket that overflows ends the subscription, which
// is renewed at the next interval). events may be nil: the periodic pass
// alone.
func (m *Manager) RunVanished(ctx context.Context, interval time.Duration, events LinkEvents) {
	var deleted <-chan string
	subscribe := func() {
		if events == nil {
			return
		}
		ch, err := events.LinkDeletions(ctx)
		if err != nil {
			m.log.Warn("link events unavailable; vanished endpoints are found every interval", "interval", interval, "err", err)
			return
		}
		deleted = ch
	}
	// Subscribed before the first pass, so that no deletion falls between.
	subscribe()
	m.RemoveVanished(ctx)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case name, ok := <-deleted:
			if !ok {
				deleted = nil
				if ctx.Err() == nil {
					m.log.Warn("link events ended; subscribing again at the next interval")
				}
				continue
			}
			if hostNamePattern.MatchString(name) {
				m.removeIfVanished(ctx, name)
			}
		case <-t.C:
			if deleted == nil {
				subscribe()
			}
			m.RemoveVanished(ctx)
		}
	}
}

// RemoveVanished removes every recorded endpoint whose host veth is gone,
// as a DEL would (map entries, pod key, IPAM release or its queue, record),
// and returns their host interface names. The node's health endpoint is
// left to its keeper (health.Endpoint.Keep), which re-creates it; nothing
// is removed before the node is set up (Restore has not reconciled the
// records yet).
func (m *Manager) RemoveVanished(ctx context.Context) []string {
	eps, err := m.store.list()
	if err != nil {
		m.log.Warn("look for vanished endpoints", "err", err)
		return nil
	}
	names := make([]string, 0, len(eps))
	for name := range eps {
		names = append(names, name)
	}
	slices.Sort(names)
	var removed []string
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		if m.removeIfVanished(ctx, name) {
			removed = append(removed, name)
		}
	}
	return removed
}

// removeIfVanished removes the endpoint of host veth name if its record
// exists and the veth does not. It decides under the attachment's lock, from
// the record and the link as they are then: a Create or Delete in flight
// finishes first, and an endpoint deleted or re-created meanwhile is left
// alone. Only a definite "no such link" removes anything, never a netlink
// error.
func (m *Manager) removeIfVanished(ctx context.Context, name string) bool {
	if m.ready() != nil {
		return false
	}
	defer m.locks.lock(name)()
	_, ep, err := m.store.load(name)
	if err != nil || m.cfg.Reserved(ep.GetAttachment()) {
		return false // no record (deleted meanwhile), or unreadable: CHECK reports it
	}
	var nf netlink.LinkNotFoundError
	if _, err := m.node.LinkByName(name); !errors.As(err, &nf) {
		return false
	}
	m.log.Info("endpoint's interface vanished; removing the endpoint", "endpoint", name,
		"container", ep.GetAttachment().GetContainerId(), "pod", ep.GetPodNamespace()+"/"+ep.GetPodName())
	if _, err := m.deleteLocked(ctx, ep.GetAttachment(), name); err != nil {
		m.log.Warn("remove vanished endpoint", "endpoint", name, "err", err)
		return false
	}
	return true
}
