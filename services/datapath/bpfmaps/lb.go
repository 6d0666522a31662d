package bpfmaps

import (
	"net/netip"
	"time"
)

// LBScope says which clients a frontend entry serves. A frontend whose
// traffic policy differs between clients outside and inside the cluster
// (externalTrafficPolicy Local: outside clients use only this node's
// backends, pods and nodes use all) has an entry per scope; the programs
// look up the internal entry first for in-cluster clients and fall back to
// the external one, which every other frontend has alone.
type LBScope uint8

// Scopes of a frontend entry.
const (
	LBScopeExternal LBScope = 0
	LBScopeInternal LBScope = 1
)

// LBKey is a frontend as the programs look it up.
type LBKey struct {
	// Addr is the frontend address, IPv4 (never IPv4-mapped) or IPv6; the
	// unspecified address of a family stands for every address of this
	// node (node ports).
	Addr netip.Addr
	// Port is the frontend port.
	Port uint16
	// Proto is the IANA protocol number: 6 (TCP), 17 (UDP), 132 (SCTP).
	Proto uint8
	// Scope is LBScopeExternal unless the frontend has an entry per scope.
	Scope LBScope
}

// LBType is the kind of frontend, as the datapath's contract (ServiceType).
type LBType uint8

// Frontend kinds.
const (
	LBTypeClusterIP    LBType = 1
	LBTypeNodePort     LBType = 2
	LBTypeLoadBalancer LBType = 3
	LBTypeExternalIP   LBType = 4
	LBTypeHostPort     LBType = 5
)

// LBBackend is one destination of a frontend.
type LBBackend struct {
	// Addr is the backend's address, of the frontend's family.
	Addr netip.Addr
	// Port is the backend's port.
	Port uint16
	// Local says the backend runs on this node.
	Local bool
}

// LBService is a frontend's entry: how the programs choose a backend for a
// new connection. Established connections keep their backend (in the
// connection tracker) whatever the entry becomes.
type LBService struct {
	// ID names the entry in the connection tracker and the counters: not
	// 0, unique among this node's entries. The caller allocates it.
	ID uint32
	// Type is the kind of frontend.
	Type LBType
	// Active are the backends chosen for new connections, each with
	// probability proportional to how often it appears (the caller expands
	// weights). Empty with Terminating empty too: new connections are
	// refused.
	Active []LBBackend
	// Terminating are chosen only while Active is empty.
	Terminating []LBBackend
	// Affinity, when positive, keeps a client address on its backend for
	// this long since its last new connection (session affinity ClientIP).
	Affinity time.Duration
	// SourceRanges, when not empty, are the only clients the entry takes
	// new connections from (loadBalancerSourceRanges); the programs drop
	// the others. Of the frontend's family, at most MaxLBSourceRanges.
	SourceRanges []netip.Prefix
	// Maglev, when not empty, is the entry's Maglev lookup table,
	// MaglevTableSize long: for each position, a slot of Active (an
	// index). While Active is not empty, new connections take the slot at
	// a hash of their tuple with a seed fixed for every node, so every
	// node sends a flow to the same backend (external frontends).
	Maglev []uint16
	// Meta is kept with the entry and returned by Services, opaque to the
	// datapath: what the agent needs to restore its view after a restart.
	// At most MaxLBMeta bytes.
	Meta []byte
}

// MaxLBMeta is the most LBService.Meta may hold.
const MaxLBMeta = 512

// MaxLBSourceRanges is the most LBService.SourceRanges may hold.
const MaxLBSourceRanges = 64

// MaglevTableSize is the length of LBService.Maglev: the datapath's table
// size, a prime.
const MaglevTableSize = 16381

// LBEntry is a frontend and its entry.
type LBEntry struct {
	Key     LBKey
	Service LBService
}

// Flow is a connection the programs translated, as the connection tracker
// holds it: the client's original tuple and where the programs sent it.
type Flow struct {
	// ServiceID is the LBService.ID of the frontend the flow was sent through.
	ServiceID uint32
	// Proto is the IANA protocol number.
	Proto uint8
	// Client and Frontend are the addresses and ports the client used.
	Client, Frontend netip.AddrPort
	// Backend is where the flow goes.
	Backend netip.AddrPort
}

// MapUsage is how full one map is.
type MapUsage struct {
	// Name is the map's name, e.g. "axon_ct".
	Name string
	// Entries is the number of entries; Capacity its max_entries.
	Entries, Capacity int
}

// LBMaps is the service load balancer's side of the maps.
type LBMaps interface {
	// PutServices writes frontend entries in order. Each one is switched
	// in with a single map write once its backends are in place, so a
	// packet sees either the old entry or the new one, whole. Entries
	// written before an error stay written; the one that failed and the
	// rest are as they were. A full map is an error wrapping unix.E2BIG,
	// as for the other maps.
	PutServices(entries []LBEntry) error
	// DeleteServices removes frontends; missing ones are skipped.
	DeleteServices(keys []LBKey) error
	// Services reads every frontend entry back, as written.
	Services() ([]LBEntry, error)
	// DeleteFlows removes the connection-tracker entries (both directions)
	// of the translated flows for which match returns true, and returns how
	// many flows it removed. The next packet of such a flow is a new
	// connection: a connected UDP socket whose backend went away moves on
	// to another one.
	DeleteFlows(match func(Flow) bool) (int, error)
	// DestroySockets destroys the node's own connected UDP sockets that the
	// socket load balancer sent to a backend instead of a frontend, for
	// which match returns true (Client is the socket's local address), and
	// returns how many it destroyed. Their owners see ECONNABORTED and
	// connect again, to a backend that is still there: the node's side of
	// what DeleteFlows does for pods.
	DestroySockets(match func(Flow) bool) (int, error)
	// UnpinFlows removes only the client's direction of the translated
	// flows for which match returns true, and returns how many flows it
	// unpinned: the client's next packet is a new connection (a connected
	// UDP socket whose backend went away moves on to another one), while
	// answers the old backend already sent are still translated back until
	// their direction idles out (ExpireFlows).
	UnpinFlows(match func(Flow) bool) (int, error)
	// ExpireFlows removes the connection-tracker entries idle for longer
	// than their protocol and state allow (the datapath's timeouts) and
	// returns how many it removed. It also forgets the clients' session
	// affinity past their frontend's Affinity.
	ExpireFlows() (int, error)
	// Usage reports how full the load balancer's and the connection
	// tracker's maps are.
	Usage() ([]MapUsage, error)
}
