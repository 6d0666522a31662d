package masquerade

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/internal/iprange"
)

// NFTables is the real Rules: the node's nftables, through netlink, in the
// calling process's network namespace.
type NFTables struct{}

var _ Rules = NFTables{}

// natTable is the name of the nftables tables (one per IP family) the agent
// owns on its node.
const natTable = "axon"

// natFamily is what differs between the IPv4 and the IPv6 table.
type natFamily struct {
	v4      bool
	table   nftables.TableFamily
	keyType nftables.SetDatatype
	// Offsets of the source and destination address in the network header.
	srcOff, dstOff, addrLen uint32
}

var natFamilies = []natFamily{
	{true, nftables.TableFamilyIPv4, nftables.TypeIPAddr, 12, 16, 4},
	{false, nftables.TableFamilyIPv6, nftables.TypeIP6Addr, 8, 24, 16},
}

// Apply makes the node's axon tables say: traffic from a pod CIDR
// to anywhere outside the pod CIDRs is masqueraded to the node's address,
// unless it leaves through the overlay (that stays pod to pod). The pod
// CIDRs are an interval set, so thousands of them (host-scope blocks) cost
// one lookup. Each family's table is replaced whole, in one batch, so the
// rules are exactly what the pools say; a family without pod CIDRs has no
// table. It runs in the node's network namespace.
func (NFTables) Apply(podCIDRs []netip.Prefix, overlay string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, fam := range natFamilies {
		var cidrs []netip.Prefix
		for _, p := range podCIDRs {
			if p.Addr().Is4() == fam.v4 {
				cidrs = append(cidrs, p.Masked())
			}
		}
		table := &nftables.Table{Name: natTable, Family: fam.table}
		// Adding before deleting makes the delete succeed whether or not
		// the table exists.
		c.AddTable(table)
		c.DelTable(table)
		if len(cidrs) == 0 {
			continue
		}
		c.AddTable(table)
		set := &nftables.Set{Table: table, Name: "podcidrs", KeyType: fam.keyType, Interval: true}
		if err := c.AddSet(set, intervalElements(cidrs)); err != nil {
			return fmt.Errorf("pod CIDR set: %w", err)
		}
		chain := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.srcOff, Len: fam.addrLen},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.dstOff, Len: fam.addrLen},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(overlay)},
			&expr.Masq{},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install masquerade rules: %w", err)
	}
	return nil
}

// Installed reports whether the axon table of every family of
// podCIDRs is in place with its rule (a firewall reload may have flushed
// the ruleset, or a table).
func (NFTables) Installed(podCIDRs []netip.Prefix) bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	for _, fam := range natFamilies {
		if !slices.ContainsFunc(podCIDRs, func(p netip.Prefix) bool { return p.Addr().Is4() == fam.v4 }) {
			continue
		}
		t, err := c.ListTableOfFamily(natTable, fam.table)
		if err != nil {
			return false
		}
		// The table alone may survive a flush of its chain or rules.
		rules, err := c.GetRules(t, &nftables.Chain{Name: "postrouting", Table: t})
		if err != nil || len(rules) == 0 {
			return false
		}
	}
	return true
}

// intervalElements renders prefixes of one family as the elements of an
// nftables interval set: merged ranges, each its first address and the
// address after its last (an interval end), after a leading interval end at
// the zero address as nft itself writes them.
func intervalElements(prefixes []netip.Prefix) []nftables.SetElement {
	var spans []iprange.Range
	for _, p := range prefixes {
		spans = append(spans, iprange.FromPrefix(p))
	}
	merged := iprange.Merge(spans)
	var zero netip.Addr
	if merged[0].From.Is4() {
		zero = netip.IPv4Unspecified()
	} else {
		zero = netip.IPv6Unspecified()
	}
	var out []nftables.SetElement
	if merged[0].From != zero {
		out = append(out, nftables.SetElement{Key: zero.AsSlice(), IntervalEnd: true})
	}
	for _, s := range merged {
		out = append(out, nftables.SetElement{Key: s.From.AsSlice()})
		if next := s.To.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// ifname is an interface name as nftables compares it: IFNAMSIZ bytes,
// zero padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
