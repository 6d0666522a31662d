// Package nlfake is an in-memory [nl.Namespaces]: network namespaces with
// links, addresses, routes and neighbours that behave, where the node agent
// depends on it, like the kernel through vishvananda/netlink. It lets the
// agent's endpoint lifecycle be tested without root, including a netlink
// call failing half-way ([Fake.FailOn], [Fake.SetFail]) and things changed
// behind the agent's back ([Fake.DeleteLink], [Fake.DeleteAddr],
// [Fake.DeleteNeigh], [Fake.DeleteNamespace]), of whose link deletions it
// tells as the kernel's link events do ([Fake.LinkDeletions]). Those outside
// changes are not calls of [nl.Handle], so the nl/nltest suite cannot hold
// them to the kernel; their doc comments say which kernel behaviour they
// follow.
//
// Ifindexes are unique across the host, except loopback's, which is 1 in
// every namespace as in the kernel.
//
// What the fake does not model: connected and local routes the kernel
// derives from addresses, IPv6 link-local addresses, link-down route
// flushing.
// The conformance suite in nl/nltest holds the modelled behaviour to the
// kernel's.
package nlfake

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// NodeNS names the node's namespace in the fake's inspection and failure
// injection calls; pod namespaces are named by their path.
const NodeNS = "node"

// NodePath is the path of the node's namespace, as a pod's is its path:
// [Fake.IsNode] says it is the node's. (The real one's is wherever the
// caller finds it, /proc/self/ns/net of the agent, say.)
const NodePath = "/proc/self/ns/net"

// Link kinds whose support can be switched off with [Fake.SetKindSupported].
const (
	KindVeth   = "veth"
	KindVxlan  = "vxlan"
	KindGeneve = "geneve"
	KindDummy  = "dummy"
)

// errClosed is what a call on a closed handle returns, as a real handle's
// closed socket would.
var errClosed = fmt.Errorf("nlfake: handle closed: %w", unix.EBADF)

// Fake is an in-memory host: the node's namespace and any number of pod
// namespaces. The zero value is not usable; use [New]. It is safe for
// concurrent use.
type Fake struct {
	mu        sync.Mutex
	byPath    map[string]*namespace
	byRef     map[int]*namespace
	nextIndex int
	nextRef   int
	open      int
	noKind    map[string]bool
	fail      func(ns, op string) error
	rules     []*rule
	calls     map[callKey]int
}

var (
	_ nl.Namespaces  = (*Fake)(nil)
	_ nl.LinkWatcher = (*Fake)(nil)
)

// rule is a failure FailOn scheduled.
type rule struct {
	ns, op string
	left   int
	err    error
}

type callKey struct{ ns, op string }

// namespace is one network namespace's state.
type namespace struct {
	name string
	ref  int
	// handles counts the handles open in the namespace; gone says its path
	// was removed, so the last handle's Close ends it.
	handles int
	gone    bool
	links   map[int]*link
	routes  []netlink.Route
	neighs  []netlink.Neigh
	// watchers are LinkDeletions subscriptions (node namespace only).
	watchers []*watcher
}

// link is one device; peer is the other end of a veth, possibly in another
// namespace. l's flags and operational state follow from up and noARP
// (see refresh).
type link struct {
	l     netlink.Link
	ns    *namespace
	peer  *link
	addrs []netlink.Addr
	up    bool
	noARP bool
}

// New returns a fake host with only the node's namespace, whose loopback
// is up.
func New() *Fake {
	f := &Fake{
		byPath: map[string]*namespace{}, byRef: map[int]*namespace{},
		nextIndex: 2, nextRef: 1000, noKind: map[string]bool{}, calls: map[callKey]int{},
	}
	lo := f.newNamespace(NodeNS).links[1]
	lo.up = true
	refresh(lo)
	return f
}

// newNamespace makes a namespace with its loopback (ifindex 1, down, as in
// a new kernel namespace). Caller holds f.mu or owns f.
func (f *Fake) newNamespace(name string) *namespace {
	ns := &namespace{name: name, ref: f.nextRef, links: map[int]*link{}}
	f.nextRef++
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{
		Index: 1, Name: "lo", MTU: 65536, EncapType: "loopback", Flags: loopbackFlag, OperState: netlink.OperDown,
		TSOMaxSize: maxGSO,
	}}
	ns.links[1] = &link{l: lo, ns: ns}
	refresh(ns.links[1])
	f.byPath[name] = ns
	f.byRef[ns.ref] = ns
	return ns
}

// AddNamespace makes a pod namespace openable at path, as a container
// runtime would before a CNI ADD. An existing one is kept.
func (f *Fake) AddNamespace(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.byPath[path]; !ok {
		f.newNamespace(path)
	}
}

// DeleteNamespace removes the namespace at path, as a container runtime
// tearing down a sandbox does: the path goes at once, the namespace when
// no handle is open in it any more (a kernel namespace lives while a
// socket in it does), and with it its links, the other ends of its veths
// and everything on those. A missing one is ignored.
func (f *Fake) DeleteNamespace(path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroy(path)
}

// destroy removes the path of a pod namespace. Caller holds f.mu.
func (f *Fake) destroy(path string) {
	ns, ok := f.byPath[path]
	if !ok || path == NodeNS {
		return
	}
	delete(f.byPath, path)
	ns.gone = true
	if ns.handles == 0 {
		f.kill(ns)
	}
}

// kill ends a namespace without path or handles. Caller holds f.mu.
func (f *Fake) kill(ns *namespace) {
	for _, l := range ns.links {
		ns.deleteLink(l)
	}
	delete(f.byRef, ns.ref)
}

// SetKindSupported switches a link kind (KindGeneve, ...) off or on: with
// it off, LinkAdd of that kind fails with EOPNOTSUPP, as on a kernel
// without the driver.
func (f *Fake) SetKindSupported(kind string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noKind[kind] = !ok
}

// SetFail installs a hook every call consults first, with the namespace
// (NodeNS or a path) and the method name ("RouteReplace", "Open", ...); a
// non-nil error is returned and the call changes nothing. nil removes it.
func (f *Fake) SetFail(fn func(ns, op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// FailOn makes the nth call (1 for the next) of op in namespace ns from
// now on fail with err, once; ns "" matches every namespace. The failing
// call changes nothing.
func (f *Fake) FailOn(ns, op string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{ns: ns, op: op, left: n, err: err})
}

// Calls counts the calls of op made in namespace ns ("" for all of them),
// failed ones included.
func (f *Fake) Calls(ns, op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, c := range f.calls {
		if (ns == "" || k.ns == ns) && k.op == op {
			n += c
		}
	}
	return n
}

// OpenHandles counts the handles opened and not yet closed, for tests that
// check the code under test closes what it opens.
func (f *Fake) OpenHandles() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

// call records a call and returns the error injected for it, if any.
// Caller holds f.mu.
func (f *Fake) call(ns, op string) error {
	f.calls[callKey{ns, op}]++
	if f.fail != nil {
		if err := f.fail(ns, op); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		if (r.ns == "" || r.ns == ns) && r.op == op {
			r.left--
			if r.left <= 0 {
				f.rules = slices.Delete(f.rules, i, i+1)
				return r.err
			}
		}
	}
	return nil
}

// Node opens a handle in the node's namespace.
func (f *Fake) Node() (nl.Handle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(NodeNS, "Node"); err != nil {
		return nil, err
	}
	return f.newHandle(f.byPath[NodeNS]), nil
}

// Open opens the namespace at path; an unknown path wraps nl.ErrNetNS.
func (f *Fake) Open(path string) (*nl.NS, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(path, "Open"); err != nil {
		return nil, err
	}
	ns, ok := f.byPath[path]
	if !ok || path == NodeNS {
		return nil, fmt.Errorf("open %s: %w: %w", path, nl.ErrNetNS, unix.ENOENT)
	}
	h := f.newHandle(ns)
	return &nl.NS{Handle: h, Ref: ns.ref, Close: h.Close}, nil
}

// IsNode reports whether path is [NodePath]; a path that is neither it nor
// a pod namespace's wraps nl.ErrNetNS, as a missing path or a file that is
// no network namespace does in the kernel.
func (f *Fake) IsNode(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(path, "IsNode"); err != nil {
		return false, err
	}
	if path == NodePath {
		return true, nil
	}
	if _, ok := f.byPath[path]; !ok || path == NodeNS {
		return false, fmt.Errorf("open %s: %w: %w", path, nl.ErrNetNS, unix.ENOENT)
	}
	return false, nil
}

// Ensure makes a namespace at path unless there is one.
func (f *Fake) Ensure(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(path, "Ensure"); err != nil {
		return err
	}
	if _, ok := f.byPath[path]; !ok {
		f.newNamespace(path)
	}
	return nil
}

// Remove removes the namespace at path as DeleteNamespace does; a missing
// one is success.
func (f *Fake) Remove(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(path, "Remove"); err != nil {
		return err
	}
	f.destroy(path)
	return nil
}

// errNotFound returns what the real handle returns for a missing link: a
// netlink.LinkNotFoundError. Its only field (the message) is unexported, so
// it is set through the struct's layout, which is that of its one field.
func errNotFound() error {
	var nf netlink.LinkNotFoundError
	*(*error)(unsafe.Pointer(&nf)) = errors.New("Link not found")
	return nf
}
