package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// natTable is the nftables table the agent owns on its node.
const natTable = "axon"

// setupMasquerade replaces the node's axon nftables table with one rule per
// pod CIDR: traffic from pods to anywhere outside the pod CIDRs is
// masqueraded to the node's address, unless it leaves through the overlay
// (that stays pod to pod). It runs in the node's network namespace.
func setupMasquerade(podCIDRs []netip.Prefix, overlay string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := &nftables.Table{Name: natTable, Family: nftables.TableFamilyIPv4}
	// Replacing the whole table makes the rules exactly what the pools say.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	chain := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	var v4 []netip.Prefix
	for _, p := range podCIDRs {
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked())
		}
	}
	for _, src := range v4 {
		exprs := matchPrefix(12, src, expr.CmpOpEq) // ip saddr
		for _, dst := range v4 {
			exprs = append(exprs, matchPrefix(16, dst, expr.CmpOpNeq)...) // ip daddr
		}
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(overlay)},
			&expr.Masq{},
		)
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install masquerade rules: %w", err)
	}
	return nil
}

// matchPrefix loads the IPv4 address at offset of the network header and
// compares its first bits with p.
func matchPrefix(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	addr := p.Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: addr[:]},
	}
}

// ifname is an interface name as nftables compares it: IFNAMSIZ bytes,
// zero padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
