// Package nl is the node agent's seam to netlink: the links, addresses,
// routes and neighbours of a network namespace ([Handle]), and the
// namespaces themselves ([Namespaces]). The real implementation is
// vishvananda/netlink's *netlink.Handle, used as it is; the in-memory fake
// in nl/nlfake lets the agent's logic be tested without root.
package nl

import (
	"context"
	"errors"

	"github.com/vishvananda/netlink"
)

// ErrNetNS means a network namespace is missing or not one.
var ErrNetNS = errors.New("network namespace unusable")

// Handle is netlink in one network namespace: the calls the agent makes.
// *netlink.Handle implements it.
type Handle interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetARPOff(link netlink.Link) error
	LinkSetGSOMaxSize(link netlink.Link, size int) error
	LinkSetGROMaxSize(link netlink.Link, size int) error
	LinkSetGSOIPv4MaxSize(link netlink.Link, size int) error
	LinkSetGROIPv4MaxSize(link netlink.Link, size int) error

	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrReplace(link netlink.Link, addr *netlink.Addr) error

	RouteList(link netlink.Link, family int) ([]netlink.Route, error)
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error

	NeighSet(neigh *netlink.Neigh) error
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)

	// Close releases the handle's sockets.
	Close()
}

var _ Handle = (*netlink.Handle)(nil)

// NS is an open network namespace: a netlink handle in it, and the
// reference that puts a new link into it (netlink.Veth.PeerNamespace,
// as netlink.NsFd(NS.Ref)).
type NS struct {
	Handle Handle
	// Ref is what a link's namespace attribute names this namespace by:
	// a file descriptor of it for the real implementation.
	Ref int
	// Close releases the handle and the reference.
	Close func()
}

// Namespaces opens netlink handles in the node's namespace and in pods'.
type Namespaces interface {
	// Node opens a new handle in the node's namespace: each caller its own
	// socket, since requests on one socket wait for each other's answers.
	Node() (Handle, error)
	// Open opens the namespace at path (a pod's). An error wraps ErrNetNS
	// when path is missing or not a network namespace.
	Open(path string) (*NS, error)
	// IsNode reports whether path is the node's own network namespace, in
	// which no pod may be wired. An error wraps ErrNetNS when path is
	// missing or not a network namespace.
	IsNode(path string) (bool, error)
	// Ensure makes path a handle of a network namespace of its own (a
	// bind mount, as `ip netns add` makes), unless it is one already.
	Ensure(path string) error
	// Remove unmounts and removes a namespace handle made by Ensure; a
	// missing one is success.
	Remove(path string) error
}

// LinkWatcher tells of links deleted in the node's namespace, so the agent
// notices an endpoint whose veth vanished while it runs. Linux and the
// fake in nl/nlfake implement it.
type LinkWatcher interface {
	// LinkDeletions delivers the names of links deleted in the node's
	// namespace from now on (by anyone: a handle, `ip link del`, the other
	// end of a veth going with its namespace), until ctx ends or the
	// subscription fails (the kernel drops a socket's events when its
	// buffer overflows); then the channel is closed.
	LinkDeletions(ctx context.Context) (<-chan string, error)
}
