package allocator

import (
	"net/netip"
	"net/url"
	"strings"

	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// keys lays out IPAM's state in etcd under one root:
//
//	pools/<pool>                         Pool spec (protojson)
//	topology/nodes/<node>                Node spec (protojson)
//	topology/blocks/<block>              blockRecord: owner node, pool, router IP
//	routers/<node>/<family>              the node's router IP of a family
//	claims/<node>/<claim id>             block claimed under a ClaimBlock claim_id
//	handles/<container id>/<ifname>      Allocation (binary protobuf); CreateRevision is its sequence
//	alloc/<pool>/<family>/<block>/<ip>   addrRecord: who holds an allocated address
//	holds/<pool>/<family>/<block>/<ip>   Reservation of a held address (protojson)
//	holdkeys/<family>/<key>              the holds/ key a reservation key holds
//	stickyowners/<key>                   the handle of the live allocation with that sticky key
//	hostclaim                            the last host-scope block claimed; every such claim compares and rewrites it
//
// Nodes and blocks share the topology/ prefix so one watch sees their
// changes in commit order (WatchBlocks). An address is free exactly when neither its alloc/ nor its holds/ key
// exists and it is usable in its block. alloc/ keys of one allocation are
// created in the same transaction as its handle, so they share its
// CreateRevision: a release compares it and can never free an address that
// was allocated again in between.
type keys struct{ root string }

func (k keys) pools() string               { return k.root + "pools/" }
func (k keys) pool(name string) string     { return k.pools() + name }
func (k keys) topology() string            { return k.root + "topology/" }
func (k keys) nodes() string               { return k.topology() + "nodes/" }
func (k keys) node(name string) string     { return k.nodes() + name }
func (k keys) blocks() string              { return k.topology() + "blocks/" }
func (k keys) block(b netip.Prefix) string { return k.blocks() + cidr.Key(b) }
func (k keys) hostClaim() string           { return k.root + "hostclaim" }
func (k keys) router(node string, f pool.Family) string {
	return k.root + "routers/" + node + "/" + familyKey(f)
}
func (k keys) claim(node, id string) string {
	return k.root + "claims/" + node + "/" + url.PathEscape(id)
}
func (k keys) handles() string { return k.root + "handles/" }
func (k keys) handle(h Handle) string {
	return k.handles() + url.PathEscape(h.ContainerID) + "/" + url.PathEscape(h.Interface)
}
func (k keys) allocs() string            { return k.root + "alloc/" }
func (k keys) allocPool(p string) string { return k.allocs() + p + "/" }
func (k keys) allocFamily(p string, f pool.Family) string {
	return k.allocPool(p) + familyKey(f) + "/"
}
func (k keys) allocBlock(p string, b netip.Prefix) string {
	return k.allocFamily(p, pool.FamilyOf(b.Addr())) + cidr.Key(b) + "/"
}
func (k keys) alloc(p string, b netip.Prefix, a netip.Addr) string {
	return k.allocBlock(p, b) + a.String()
}
func (k keys) holds() string            { return k.root + "holds/" }
func (k keys) holdPool(p string) string { return k.holds() + p + "/" }
func (k keys) holdFamily(p string, f pool.Family) string {
	return k.holdPool(p) + familyKey(f) + "/"
}
func (k keys) holdBlock(p string, b netip.Prefix) string {
	return k.holdFamily(p, pool.FamilyOf(b.Addr())) + cidr.Key(b) + "/"
}
func (k keys) hold(p string, b netip.Prefix, a netip.Addr) string {
	return k.holdBlock(p, b) + a.String()
}
func (k keys) stickyOwner(key string) string { return k.root + "stickyowners/" + key }
func (k keys) holdKey(f pool.Family, key string) string {
	return k.root + "holdkeys/" + familyKey(f) + "/" + key
}

// lastSegment returns the part of key after its last '/'.
func lastSegment(key string) string {
	return key[strings.LastIndexByte(key, '/')+1:]
}

func familyKey(f pool.Family) string {
	if f == pool.IPv4 {
		return "ipv4"
	}
	return "ipv6"
}

// prefixEnd is the end of the key range of every key starting with p.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}
