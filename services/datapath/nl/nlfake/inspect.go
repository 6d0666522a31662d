package nlfake

import (
	"slices"

	"github.com/vishvananda/netlink"
)

// Namespaces lists the namespaces' names: NodeNS and the pod paths.
func (f *Fake) Namespaces() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.byPath))
	for p := range f.byPath {
		names = append(names, p)
	}
	slices.Sort(names)
	return names
}

// Links returns copies of the links in namespace ns, by ifindex; nil for
// an unknown namespace.
func (f *Fake) Links(ns string) []netlink.Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil
	}
	return n.linkList()
}

// Link returns a copy of the link name in namespace ns.
func (f *Fake) Link(ns, name string) (netlink.Link, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil, false
	}
	l := n.byName(name)
	if l == nil {
		return nil, false
	}
	return cloneLink(l.l), true
}

// Indexes returns the ifindexes of the links in namespace ns by name, as
// bpffake.Fake.SetInterfaces takes them.
func (f *Fake) Indexes(ns string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil
	}
	out := make(map[string]int, len(n.links))
	for i, l := range n.links {
		out[l.l.Attrs().Name] = i
	}
	return out
}

// Addrs returns the addresses of the link name in namespace ns.
func (f *Fake) Addrs(ns, name string) []netlink.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil
	}
	l := n.byName(name)
	if l == nil {
		return nil
	}
	return cloneAddrs(l.addrs)
}

// Routes returns the routes of namespace ns.
func (f *Fake) Routes(ns string) []netlink.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil
	}
	out := make([]netlink.Route, 0, len(n.routes))
	for _, r := range n.routes {
		out = append(out, cloneRoute(r))
	}
	return out
}

// Neighs returns the neighbour entries of namespace ns.
func (f *Fake) Neighs(ns string) []netlink.Neigh {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return nil
	}
	out := make([]netlink.Neigh, 0, len(n.neighs))
	for _, nb := range n.neighs {
		out = append(out, cloneNeigh(nb))
	}
	return out
}
