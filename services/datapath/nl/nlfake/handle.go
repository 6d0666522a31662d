package nlfake

import (
	"crypto/rand"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// Kernel limits the agent runs into.
const (
	minMTU = 68
	maxMTU = 65535
	// maxGSO is the largest GSO/GRO size a veth takes (its tso_max_size).
	maxGSO = 524280
	// defaultGSO is a new device's GSO and GRO limit.
	defaultGSO = 65536
)

const (
	loopbackFlag = net.FlagLoopback
	upFlags      = net.FlagUp | net.FlagRunning
)

// handle is netlink in one namespace of a Fake.
type handle struct {
	f      *Fake
	ns     *namespace
	closed bool
}

var _ nl.Handle = (*handle)(nil)

// begin records op and returns its injected error, or errClosed. Caller
// holds h.f.mu.
func (h *handle) begin(op string) error {
	if h.closed {
		return errClosed
	}
	return h.f.call(h.ns.name, op)
}

// newHandle opens a handle in ns. Caller holds f.mu.
func (f *Fake) newHandle(ns *namespace) *handle {
	f.open++
	ns.handles++
	return &handle{f: f, ns: ns}
}

// Close releases the handle, and ends its namespace if that lost its path
// and this was the last handle in it; closing twice is harmless.
func (h *handle) Close() {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.f.open--
	h.ns.handles--
	if h.ns.gone && h.ns.handles == 0 {
		h.f.kill(h.ns)
	}
}

func (ns *namespace) byName(name string) *link {
	for _, l := range ns.links {
		if l.l.Attrs().Name == name {
			return l
		}
	}
	return nil
}

func (ns *namespace) linkList() []netlink.Link {
	idx := make([]int, 0, len(ns.links))
	for i := range ns.links {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]netlink.Link, 0, len(idx))
	for _, i := range idx {
		out = append(out, cloneLink(ns.links[i].l))
	}
	return out
}

// deleteLink removes l and a veth's peer, with their addresses, routes and
// neighbours.
func (ns *namespace) deleteLink(l *link) {
	ns.drop(l)
	if l.peer != nil {
		l.peer.ns.drop(l.peer)
		l.peer.peer = nil
		l.peer = nil
	}
}

func (ns *namespace) drop(l *link) {
	idx := l.l.Attrs().Index
	delete(ns.links, idx)
	for _, w := range ns.watchers {
		w.push(l.l.Attrs().Name)
	}
	ns.routes = slices.DeleteFunc(ns.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
	ns.neighs = slices.DeleteFunc(ns.neighs, func(n netlink.Neigh) bool { return n.LinkIndex == idx })
}

// resolve finds the link a call names, as the real handle does: by index,
// or by name when the index is 0, filling the caller's index in.
func (h *handle) resolve(l netlink.Link) (*link, error) {
	if l == nil || l.Attrs() == nil {
		return nil, unix.EINVAL
	}
	a := l.Attrs()
	if a.Index == 0 {
		found := h.ns.byName(a.Name)
		if found == nil {
			// The real handle sends ifindex 0 and no name.
			return nil, unix.EINVAL
		}
		a.Index = found.l.Attrs().Index
		return found, nil
	}
	found, ok := h.ns.links[a.Index]
	if !ok {
		return nil, unix.ENODEV
	}
	return found, nil
}

// LinkByName returns a copy of the link name.
func (h *handle) LinkByName(name string) (netlink.Link, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("LinkByName"); err != nil {
		return nil, err
	}
	l := h.ns.byName(name)
	if l == nil {
		return nil, errNotFound()
	}
	return cloneLink(l.l), nil
}

// LinkByIndex returns a copy of the link with ifindex index.
func (h *handle) LinkByIndex(index int) (netlink.Link, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("LinkByIndex"); err != nil {
		return nil, err
	}
	l, ok := h.ns.links[index]
	if !ok {
		return nil, errNotFound()
	}
	return cloneLink(l.l), nil
}

// LinkList returns copies of the namespace's links by ifindex.
func (h *handle) LinkList() ([]netlink.Link, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("LinkList"); err != nil {
		return nil, err
	}
	return h.ns.linkList(), nil
}

// LinkAdd creates a veth pair (the peer first, as the kernel does, so it
// gets the lower ifindex), a VXLAN, Geneve or dummy device, and sets the
// new device's index in link.
func (h *handle) LinkAdd(nlink netlink.Link) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("LinkAdd"); err != nil {
		return err
	}
	a := nlink.Attrs()
	if a.Name == "" {
		return fmt.Errorf("LinkAttrs.Name cannot be empty")
	}
	kind := nlink.Type()
	switch nlink.(type) {
	case *netlink.Veth, *netlink.Vxlan, *netlink.Geneve, *netlink.Dummy:
	default:
		return unix.EOPNOTSUPP
	}
	if h.f.noKind[kind] {
		return unix.EOPNOTSUPP
	}
	if h.ns.byName(a.Name) != nil {
		return unix.EEXIST
	}
	if a.HardwareAddr != nil && len(a.HardwareAddr) != 6 {
		return unix.EINVAL
	}
	if a.MTU != 0 && (a.MTU < minMTU || a.MTU > maxMTU) {
		return unix.EINVAL
	}
	if max(a.GSOMaxSize, a.GROMaxSize, a.GSOIPv4MaxSize, a.GROIPv4MaxSize) > maxGSO {
		return unix.EINVAL
	}
	stored := newLink(h.ns, cloneLink(nlink), a)
	if v, ok := nlink.(*netlink.Veth); ok {
		peerNS := h.ns
		switch ref := v.PeerNamespace.(type) {
		case nil:
		case netlink.NsFd:
			if peerNS, ok = h.f.byRef[int(ref)]; !ok {
				return unix.EBADF
			}
		default:
			return unix.EINVAL
		}
		peerName := v.PeerName
		if peerName == "" {
			peerName = fmt.Sprintf("veth%d", h.f.nextIndex)
		}
		if peerNS.byName(peerName) != nil || (peerNS == h.ns && peerName == a.Name) {
			return unix.EEXIST
		}
		if v.PeerHardwareAddr != nil && len(v.PeerHardwareAddr) != 6 {
			return unix.EINVAL
		}
		mtu := int(v.PeerMTU)
		if mtu == 0 {
			mtu = a.MTU
		}
		if mtu != 0 && (mtu < minMTU || mtu > maxMTU) {
			return unix.EINVAL
		}
		peer := newLink(peerNS, &netlink.Veth{}, &netlink.LinkAttrs{Name: peerName, MTU: mtu, HardwareAddr: v.PeerHardwareAddr})
		stored.l = &netlink.Veth{LinkAttrs: *stored.l.Attrs()}
		stored.peer, peer.peer = peer, stored
		h.f.place(peer)
	}
	h.f.place(stored)
	if a.Flags&net.FlagUp != 0 {
		stored.up = true
	}
	refresh(stored)
	if stored.peer != nil {
		refresh(stored.peer)
	}
	a.Index = stored.l.Attrs().Index
	return nil
}

// newLink makes a device of l's kind in ns from the attributes asked for,
// with the kernel's defaults for the rest; l holds the kind's own fields.
func newLink(ns *namespace, l netlink.Link, want *netlink.LinkAttrs) *link {
	a := l.Attrs()
	*a = netlink.LinkAttrs{
		Name: want.Name, MTU: want.MTU, HardwareAddr: slices.Clone(want.HardwareAddr), EncapType: "ether",
		GSOMaxSize: want.GSOMaxSize, GROMaxSize: want.GROMaxSize,
		GSOIPv4MaxSize: want.GSOIPv4MaxSize, GROIPv4MaxSize: want.GROIPv4MaxSize,
	}
	if a.MTU == 0 {
		a.MTU = 1500
	}
	if a.HardwareAddr == nil {
		a.HardwareAddr = randomMAC()
	}
	for _, s := range []*uint32{&a.GSOMaxSize, &a.GROMaxSize, &a.GSOIPv4MaxSize, &a.GROIPv4MaxSize} {
		if *s == 0 {
			*s = defaultGSO
		}
	}
	// The driver's limit (tso_max_size): veth raises it; tunnel devices
	// keep the legacy 64 KiB.
	a.TSOMaxSize = defaultGSO
	if _, ok := l.(*netlink.Veth); ok {
		a.TSOMaxSize = maxGSO
	}
	return &link{l: l, ns: ns}
}

// place gives l the next ifindex of the host and puts it in its namespace.
// Caller holds f.mu.
func (f *Fake) place(l *link) {
	l.l.Attrs().Index = f.nextIndex
	f.nextIndex++
	l.ns.links[l.l.Attrs().Index] = l
}

// refresh derives l's flags and operational state from whether it and a
// veth's peer are up, as the kernel reports them.
func refresh(l *link) {
	a := l.l.Attrs()
	a.Flags &^= upFlags
	a.RawFlags &^= unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	if a.Flags&loopbackFlag == 0 {
		a.Flags |= net.FlagBroadcast | net.FlagMulticast
		a.RawFlags |= unix.IFF_BROADCAST | unix.IFF_MULTICAST
	} else {
		a.RawFlags |= unix.IFF_LOOPBACK
	}
	if l.noARP {
		a.RawFlags |= unix.IFF_NOARP
	}
	if l.peer != nil {
		a.ParentIndex = l.peer.l.Attrs().Index
	}
	switch {
	case !l.up:
		a.OperState = netlink.OperDown
	case l.peer != nil && !l.peer.up:
		a.Flags |= net.FlagUp
		a.RawFlags |= unix.IFF_UP
		a.OperState = netlink.OperLowerLayerDown
	default:
		a.Flags |= upFlags
		a.RawFlags |= unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
		a.OperState = netlink.OperUnknown
		if l.peer != nil {
			a.OperState = netlink.OperUp
		}
	}
}

// LinkDel deletes a link; a veth's other end goes with it.
func (h *handle) LinkDel(nlink netlink.Link) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("LinkDel"); err != nil {
		return err
	}
	l, err := h.resolve(nlink)
	if err != nil {
		return err
	}
	h.ns.deleteLink(l)
	return nil
}

// modify runs fn on the link nlink names, under the fake's lock.
func (h *handle) modify(op string, nlink netlink.Link, fn func(*link) error) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin(op); err != nil {
		return err
	}
	l, err := h.resolve(nlink)
	if err != nil {
		return err
	}
	return fn(l)
}

// LinkSetUp brings a link up; a veth is operationally up once both ends are.
func (h *handle) LinkSetUp(nlink netlink.Link) error {
	return h.modify("LinkSetUp", nlink, func(l *link) error {
		l.up = true
		refresh(l)
		if l.peer != nil {
			refresh(l.peer)
		}
		return nil
	})
}

// LinkSetMTU sets a link's MTU within the kernel's bounds.
func (h *handle) LinkSetMTU(nlink netlink.Link, mtu int) error {
	return h.modify("LinkSetMTU", nlink, func(l *link) error {
		if mtu < minMTU || mtu > maxMTU {
			return unix.EINVAL
		}
		l.l.Attrs().MTU = mtu
		return nil
	})
}

// LinkSetARPOff sets NOARP on a link.
func (h *handle) LinkSetARPOff(nlink netlink.Link) error {
	return h.modify("LinkSetARPOff", nlink, func(l *link) error {
		l.noARP = true
		refresh(l)
		return nil
	})
}

func (h *handle) setSize(op string, nlink netlink.Link, size int, field func(*netlink.LinkAttrs) *uint32) error {
	return h.modify(op, nlink, func(l *link) error {
		if size < 0 || size > maxGSO {
			return unix.EINVAL
		}
		*field(l.l.Attrs()) = uint32(size)
		return nil
	})
}

// LinkSetGSOMaxSize sets the largest GSO packet the link builds.
func (h *handle) LinkSetGSOMaxSize(nlink netlink.Link, size int) error {
	return h.setSize("LinkSetGSOMaxSize", nlink, size, func(a *netlink.LinkAttrs) *uint32 { return &a.GSOMaxSize })
}

// LinkSetGROMaxSize sets the largest GRO packet the link builds.
func (h *handle) LinkSetGROMaxSize(nlink netlink.Link, size int) error {
	return h.setSize("LinkSetGROMaxSize", nlink, size, func(a *netlink.LinkAttrs) *uint32 { return &a.GROMaxSize })
}

// LinkSetGSOIPv4MaxSize is LinkSetGSOMaxSize for IPv4.
func (h *handle) LinkSetGSOIPv4MaxSize(nlink netlink.Link, size int) error {
	return h.setSize("LinkSetGSOIPv4MaxSize", nlink, size, func(a *netlink.LinkAttrs) *uint32 { return &a.GSOIPv4MaxSize })
}

// LinkSetGROIPv4MaxSize is LinkSetGROMaxSize for IPv4.
func (h *handle) LinkSetGROIPv4MaxSize(nlink netlink.Link, size int) error {
	return h.setSize("LinkSetGROIPv4MaxSize", nlink, size, func(a *netlink.LinkAttrs) *uint32 { return &a.GROIPv4MaxSize })
}

func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac) // crypto/rand.Read does not fail.
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}
