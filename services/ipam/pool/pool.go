// Package pool turns IPAM pool and node specs from the API into validated
// values the allocator works with: parsed CIDRs, block sizes, reserved
// ranges, selectors, and which addresses of a block may be handed out.
package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
	"github.com/axon-cni/axon/services/internal/iprange"
	"github.com/axon-cni/axon/services/internal/selector"
	"github.com/axon-cni/axon/services/ipam/cidr"
)

// Default block prefix lengths, as in Calico and Cilium's multi-pool mode.
const (
	DefaultBlockBits4 = 26
	DefaultBlockBits6 = 122
	maxBlockBits4     = 30
	maxBlockBits6     = 126
)

// Mode is where a pool's node blocks come from.
type Mode int

// Pool modes.
const (
	ClusterScope Mode = iota
	HostScope
)

// Family is an IP family.
type Family = commonv1alpha1.IPFamily

// IPv4 and IPv6 are the families a pool may serve.
const (
	IPv4 = commonv1alpha1.IPFamily_IP_FAMILY_IPV4
	IPv6 = commonv1alpha1.IPFamily_IP_FAMILY_IPV6
)

// FamilyOf returns the family of a.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Families lists the families in their canonical order.
var Families = []Family{IPv4, IPv6}

// Pool is a validated pool spec.
type Pool struct {
	Name              string
	Mode              Mode
	Priority          int32
	Default           bool
	NamespaceSelector *selector.Selector
	PodSelector       *selector.Selector
	families          map[Family]*FamilySpec
}

// FamilySpec is a pool's validated configuration for one family.
type FamilySpec struct {
	Family    Family
	CIDRs     []netip.Prefix
	BlockBits int
	Reserved  []iprange.Range
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidName checks a DNS-1123 label, the form of pool names.
func ValidName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %s must be a DNS-1123 label: 1-63 lower-case alphanumerics or '-', starting and ending alphanumeric", kind, bounded.Quote(name))
	}
	return nil
}

// Parse validates p and returns its parsed form. Every problem is reported,
// joined. It checks p alone; overlaps with other pools are the caller's.
func Parse(p *ipamv1alpha1.Pool) (*Pool, error) {
	if p == nil {
		return nil, errors.New("pool is required")
	}
	var errs []error
	if err := ValidName("pool", p.GetName()); err != nil {
		errs = append(errs, err)
	}
	out := &Pool{Name: p.GetName(), Priority: p.GetPriority(), Default: p.GetDefault(), families: map[Family]*FamilySpec{}}
	switch p.GetMode() {
	case ipamv1alpha1.PoolMode_POOL_MODE_UNSPECIFIED, ipamv1alpha1.PoolMode_POOL_MODE_CLUSTER_SCOPE:
		out.Mode = ClusterScope
	case ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE:
		out.Mode = HostScope
	default:
		errs = append(errs, fmt.Errorf("unknown mode %d", p.GetMode()))
	}
	if p.GetIpv4() == nil && p.GetIpv6() == nil {
		errs = append(errs, errors.New("at least one of ipv4 and ipv6 must be set"))
	}
	for _, f := range []struct {
		fam  Family
		spec *ipamv1alpha1.PoolFamily
	}{{IPv4, p.GetIpv4()}, {IPv6, p.GetIpv6()}} {
		if f.spec == nil {
			continue
		}
		fs, err := parseFamily(f.fam, f.spec, out.Mode)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.families[f.fam] = fs
	}
	var err error
	if out.NamespaceSelector, err = selector.Parse(p.GetNamespaceSelector()); err != nil {
		errs = append(errs, fmt.Errorf("namespace_selector: %w", err))
	}
	if out.PodSelector, err = selector.Parse(p.GetPodSelector()); err != nil {
		errs = append(errs, fmt.Errorf("pod_selector: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pool %s: %w", bounded.Quote(p.GetName()), err)
	}
	return out, nil
}

func familyName(f Family) string {
	if f == IPv4 {
		return "ipv4"
	}
	return "ipv6"
}

func parseFamily(fam Family, spec *ipamv1alpha1.PoolFamily, mode Mode) (*FamilySpec, error) {
	name := familyName(fam)
	var errs []error
	fs := &FamilySpec{Family: fam, BlockBits: int(spec.GetBlockPrefixLength())}
	if fs.BlockBits == 0 {
		fs.BlockBits = DefaultBlockBits4
		if fam == IPv6 {
			fs.BlockBits = DefaultBlockBits6
		}
	}
	maxBits := maxBlockBits4
	if fam == IPv6 {
		maxBits = maxBlockBits6
	}
	if mode == ClusterScope && fs.BlockBits > maxBits {
		errs = append(errs, fmt.Errorf("%s.block_prefix_length %d: at most %d", name, fs.BlockBits, maxBits))
	}
	if mode == ClusterScope && len(spec.GetCidrs()) == 0 {
		errs = append(errs, fmt.Errorf("%s.cidrs: a cluster-scope pool needs at least one CIDR", name))
	}
	for _, s := range spec.GetCidrs() {
		p, err := cidr.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.cidrs: %w", name, err))
			continue
		}
		if FamilyOf(p.Addr()) != fam {
			errs = append(errs, fmt.Errorf("%s.cidrs: %s is not %s", name, p, name))
			continue
		}
		if mode == ClusterScope && fs.BlockBits < p.Bits() {
			errs = append(errs, fmt.Errorf("%s.block_prefix_length %d does not fit in %s", name, fs.BlockBits, p))
		}
		for _, q := range fs.CIDRs {
			if q.Overlaps(p) {
				errs = append(errs, fmt.Errorf("%s.cidrs: %s overlaps %s", name, p, q))
			}
		}
		fs.CIDRs = append(fs.CIDRs, p)
	}
	for i, r := range spec.GetReservedRanges() {
		rng, err := ParseRange(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.reserved_ranges[%d]: %w", name, i, err))
			continue
		}
		if FamilyOf(rng.From) != fam {
			errs = append(errs, fmt.Errorf("%s.reserved_ranges[%d]: %s is not %s", name, i, rng, name))
			continue
		}
		if len(fs.CIDRs) > 0 && !slices.ContainsFunc(fs.CIDRs, rng.Within) {
			errs = append(errs, fmt.Errorf("%s.reserved_ranges[%d]: %s is not inside one of the pool's CIDRs", name, i, rng))
		}
		fs.Reserved = append(fs.Reserved, rng)
	}
	slices.SortFunc(fs.CIDRs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return fs, errors.Join(errs...)
}

// ParseRange parses an AddressRange: a CIDR, or start and end.
func ParseRange(r *commonv1alpha1.AddressRange) (iprange.Range, error) {
	if r.GetCidr() != "" {
		if r.GetStart() != "" || r.GetEnd() != "" {
			return iprange.Range{}, errors.New("set either cidr or start and end, not both")
		}
		p, err := cidr.ParsePrefix(r.GetCidr())
		if err != nil {
			return iprange.Range{}, err
		}
		return iprange.FromPrefix(p), nil
	}
	if r.GetStart() == "" {
		return iprange.Range{}, errors.New("set cidr, or start and end")
	}
	from, err := cidr.ParseAddr(r.GetStart())
	if err != nil {
		return iprange.Range{}, err
	}
	to := from
	if r.GetEnd() != "" {
		if to, err = cidr.ParseAddr(r.GetEnd()); err != nil {
			return iprange.Range{}, err
		}
	}
	return iprange.New(from, to)
}

// Family returns p's configuration of f, or nil if p does not serve f.
func (p *Pool) Family(f Family) *FamilySpec { return p.families[f] }

// FamilyList returns the families p serves, IPv4 first.
func (p *Pool) FamilyList() []Family {
	var out []Family
	for _, f := range Families {
		if p.families[f] != nil {
			out = append(out, f)
		}
	}
	return out
}

// HasSelector reports whether p can be chosen by selector.
func (p *Pool) HasSelector() bool { return p.NamespaceSelector != nil || p.PodSelector != nil }

// SelectsPod reports whether p's selectors choose a pod; a pool without
// selectors never does.
func (p *Pool) SelectsPod(podLabels, namespaceLabels map[string]string) bool {
	return p.HasSelector() && p.NamespaceSelector.Matches(namespaceLabels) && p.PodSelector.Matches(podLabels)
}

// CIDRContaining returns the pool CIDR that contains a.
func (fs *FamilySpec) CIDRContaining(a netip.Addr) (netip.Prefix, bool) {
	for _, p := range fs.CIDRs {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Usable reports whether a may be handed out from a block whose enclosing
// range is outer (the pool CIDR, or for host scope the node's pod CIDR): it
// is not the first address of outer, not the last of an IPv4 outer, and in
// no reserved range.
func (fs *FamilySpec) Usable(outer netip.Prefix, a netip.Addr) bool {
	r := iprange.FromPrefix(outer)
	if a == r.From || (a.Is4() && a == r.To && outer.Bits() < 31) {
		return false
	}
	for _, rr := range fs.Reserved {
		if rr.Contains(a) {
			return false
		}
	}
	return true
}
