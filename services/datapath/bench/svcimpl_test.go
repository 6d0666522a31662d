package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// errNotAvailable is what an implementation answers when it cannot run on
// this build (Axon before its service load balancer lands): the report
// shows it as not available rather than failing.
var errNotAvailable = errors.New("not available")

// svcSpec is one service: a frontend (VIP:svcPort, TCP) and its backends.
type svcSpec struct {
	Name     string // "bench/svc-N", as a Kubernetes namespace/name
	VIP      netip.Addr
	Backends []netip.AddrPort
}

// frontend is where clients connect.
func (s svcSpec) frontend() netip.AddrPort { return netip.AddrPortFrom(s.VIP, svcPort) }

// serviceSet returns the services of one size: max(n, 1) of them (size 0
// is the measured service alone). The last points at the real backends;
// the others at unused addresses of a range of their own, svcBackends
// each. extra is the service added afterwards ("one more"), at the real
// backends too so that its programming can be checked with a connection.
func serviceSet(n int, real []netip.Addr) (svcs []svcSpec, extra svcSpec) {
	count := max(n, 1)
	svcs = make([]svcSpec, count)
	for i := range svcs {
		s := svcSpec{Name: fmt.Sprintf("bench/svc-%d", i), VIP: addrAdd(svcVIPBase, uint32(i))}
		if i == count-1 {
			s.Backends = realBackends(real)
		} else {
			for j := range svcBackends {
				s.Backends = append(s.Backends, netip.AddrPortFrom(addrAdd(svcUnusedNet, uint32(i*svcBackends+j)), backendPort))
			}
		}
		svcs[i] = s
	}
	extra = svcSpec{Name: fmt.Sprintf("bench/svc-%d", count), VIP: addrAdd(svcVIPBase, uint32(count)), Backends: realBackends(real)}
	return svcs, extra
}

func realBackends(real []netip.Addr) []netip.AddrPort {
	out := make([]netip.AddrPort, len(real))
	for i, a := range real {
		out[i] = netip.AddrPortFrom(a, backendPort)
	}
	return out
}

// memUsage is what an implementation's programmed services take.
type memUsage struct {
	// RulesetBytes is the size of the text handed to the restore or nft
	// call that programmed them (netfilter); 0 if none.
	RulesetBytes int
	// SlabDelta and VmallocDelta are how much the kernel's slab and
	// vmalloc memory grew while programming them (/proc/meminfo;
	// machine-wide, so noisy); 0 if not measured.
	SlabDelta, VmallocDelta int64
	// Maps are the eBPF maps and their locked memory (Axon).
	Maps []mapMem
}

// mapMem is one eBPF map's memory.
type mapMem struct {
	Name       string
	MaxEntries uint32
	Memlock    uint64
}

// serviceImpl is one way of translating service addresses: a
// kube-proxy-style iptables ruleset on either backend, an nftables
// verdict-map ruleset, Axon's eBPF load balancer, or none at all.
type serviceImpl interface {
	// name labels the implementation in the report.
	name() string
	// program makes svcs the whole set of services and returns the wall
	// time of the call that did it.
	program(ctx context.Context, svcs []svcSpec) (time.Duration, error)
	// addOne adds one more service to those programmed and returns the
	// wall time of the call that did it.
	addOne(ctx context.Context, svc svcSpec) (time.Duration, error)
	// memory reports what the programmed services take.
	memory(ctx context.Context) (memUsage, error)
	// target is where a client connects to reach svc (the VIP, or a
	// backend directly for the baseline).
	target(svc svcSpec) netip.AddrPort
	// teardown removes everything the implementation programmed.
	teardown(ctx context.Context) error
}

// baselineImpl is no service at all: the client connects to a backend
// directly (the floor every implementation adds its translation to).
type baselineImpl struct{ label string }

func (b baselineImpl) name() string { return b.label }
func (baselineImpl) program(context.Context, []svcSpec) (time.Duration, error) {
	return 0, nil
}
func (baselineImpl) addOne(context.Context, svcSpec) (time.Duration, error) { return 0, nil }
func (baselineImpl) memory(context.Context) (memUsage, error)               { return memUsage{}, nil }
func (baselineImpl) target(svc svcSpec) netip.AddrPort                      { return svc.Backends[0] }
func (baselineImpl) teardown(context.Context) error                         { return nil }

// runIn runs a command with stdin inside the namespace at nsPath (the
// child forks from a thread in it) and returns its wall time.
func runIn(ctx context.Context, nsPath string, stdin []byte, name string, args ...string) (time.Duration, error) {
	var d time.Duration
	err := inNS(nsPath, func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d = time.Since(t0)
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, firstLines(out.String(), 5))
		}
		return nil
	})
	return d, err
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// kernelMem reads the kernel's slab and vmalloc use from /proc/meminfo,
// in bytes.
func kernelMem() (slab, vmalloc int64, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "Slab" && k != "VmallocUsed") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/meminfo %s: %w", k, err)
		}
		if k == "Slab" {
			slab = kb << 10
		} else {
			vmalloc = kb << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("no Slab or VmallocUsed in /proc/meminfo")
	}
	return slab, vmalloc, sc.Err()
}

// measureKernelMem runs fn and returns fn's result with the growth of the
// kernel's slab and vmalloc use meanwhile.
func measureKernelMem(fn func() (time.Duration, error)) (d time.Duration, slab, vmalloc int64, err error) {
	s0, v0, err := kernelMem()
	if err != nil {
		return 0, 0, 0, err
	}
	if d, err = fn(); err != nil {
		return 0, 0, 0, err
	}
	s1, v1, err := kernelMem()
	if err != nil {
		return 0, 0, 0, err
	}
	return d, s1 - s0, v1 - v0, nil
}

// kubeChain is kube-proxy's name for a per-service or per-endpoint chain:
// prefix and the first 16 characters of the base32 SHA-256 of what it
// stands for.
func kubeChain(prefix, what string) string {
	h := sha256.Sum256([]byte(what))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// iptablesImpl is kube-proxy's iptables mode, without masquerading (pod
// to service traffic needs none): PREROUTING jumps to KUBE-SERVICES, one
// rule per service matching VIP and port jumps to its KUBE-SVC-* chain,
// which picks a KUBE-SEP-* chain with `statistic --mode random`, which
// DNATs to its backend. restore is iptables-legacy-restore or
// iptables-nft-restore.
type iptablesImpl struct {
	label, restore string
	node           *ns
	svcs           []svcSpec
	mem            memUsage
}

func (p *iptablesImpl) name() string                      { return p.label }
func (p *iptablesImpl) target(svc svcSpec) netip.AddrPort { return svc.frontend() }

// svcRule is the KUBE-SERVICES rule of s.
func svcRule(s svcSpec) string {
	return fmt.Sprintf("-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n",
		s.VIP, s.Name, svcPort, kubeChain("KUBE-SVC-", s.Name+"tcp"))
}

// writeSvcChains writes the chain declarations and rules of s below
// KUBE-SERVICES: its KUBE-SVC-* chain and a KUBE-SEP-* chain per backend.
func writeSvcChains(decl, rules *bytes.Buffer, s svcSpec) {
	svc := kubeChain("KUBE-SVC-", s.Name+"tcp")
	fmt.Fprintf(decl, ":%s - [0:0]\n", svc)
	for i, b := range s.Backends {
		sep := kubeChain("KUBE-SEP-", s.Name+"tcp"+b.String())
		fmt.Fprintf(decl, ":%s - [0:0]\n", sep)
		if left := len(s.Backends) - i; left > 1 {
			fmt.Fprintf(rules, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %0.10f -j %s\n",
				svc, s.Name, b, 1/float64(left), sep)
		} else {
			fmt.Fprintf(rules, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", svc, s.Name, b, sep)
		}
		fmt.Fprintf(rules, "-A %s -m comment --comment %s -p tcp -m tcp -j DNAT --to-destination %s\n", sep, s.Name, b)
	}
}

// ruleset is the whole nat table for svcs, as kube-proxy's full sync
// writes it.
func iptablesRuleset(svcs []svcSpec) []byte {
	var decl, rules bytes.Buffer
	decl.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n")
	rules.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	for _, s := range svcs {
		rules.WriteString(svcRule(s))
	}
	for _, s := range svcs {
		writeSvcChains(&decl, &rules, s)
	}
	decl.Write(rules.Bytes())
	decl.WriteString("COMMIT\n")
	return decl.Bytes()
}

func (p *iptablesImpl) program(ctx context.Context, svcs []svcSpec) (time.Duration, error) {
	rs := iptablesRuleset(svcs)
	d, slab, vmalloc, err := measureKernelMem(func() (time.Duration, error) { return runIn(ctx, p.node.path, rs, p.restore) })
	if err != nil {
		return 0, err
	}
	p.svcs = svcs
	p.mem = memUsage{RulesetBytes: len(rs), SlabDelta: slab, VmallocDelta: vmalloc}
	return d, nil
}

// addOne is kube-proxy's partial sync for one new service: KUBE-SERVICES
// rewritten whole (declaring it flushes it), the new service's chains
// added, every other chain left alone (--noflush).
func (p *iptablesImpl) addOne(ctx context.Context, svc svcSpec) (time.Duration, error) {
	var decl, rules bytes.Buffer
	decl.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n")
	p.svcs = append(p.svcs, svc)
	for _, s := range p.svcs {
		rules.WriteString(svcRule(s))
	}
	writeSvcChains(&decl, &rules, svc)
	decl.Write(rules.Bytes())
	decl.WriteString("COMMIT\n")
	return runIn(ctx, p.node.path, decl.Bytes(), p.restore, "--noflush")
}

func (p *iptablesImpl) memory(context.Context) (memUsage, error) { return p.mem, nil }

// teardown empties the nat table.
func (p *iptablesImpl) teardown(ctx context.Context) error {
	_, err := runIn(ctx, p.node.path, []byte("*nat\nCOMMIT\n"), p.restore)
	return err
}

// nftTable is the nftables implementation's table.
const nftTable = "axon_bench"

// nftImpl is kube-proxy's nftables mode, reduced to what pod-to-service
// traffic needs: in a dstnat prerouting chain one verdict-map lookup of
// daddr . l4proto . dport jumps to the service's chain, which picks an
// endpoint chain with `numgen random mod N vmap`, which DNATs.
type nftImpl struct {
	node *ns
	mem  memUsage
}

func (p *nftImpl) name() string                      { return "nftables (verdict map)" }
func (p *nftImpl) target(svc svcSpec) netip.AddrPort { return svc.frontend() }

func nftSvcChain(s svcSpec) string { return strings.ToLower(kubeChain("svc-", s.Name+"tcp")) }

// writeNftService adds s's chains and its verdict-map element.
func writeNftService(b *bytes.Buffer, s svcSpec) {
	svc := nftSvcChain(s)
	var picks []string
	for i, be := range s.Backends {
		ep := strings.ToLower(kubeChain("ep-", s.Name+"tcp"+be.String()))
		fmt.Fprintf(b, "add chain ip %s %s\nadd rule ip %s %s meta l4proto tcp dnat to %s\n", nftTable, ep, nftTable, ep, be)
		picks = append(picks, fmt.Sprintf("%d : goto %s", i, ep))
	}
	fmt.Fprintf(b, "add chain ip %s %s\nadd rule ip %s %s numgen random mod %d vmap { %s }\n",
		nftTable, svc, nftTable, svc, len(s.Backends), strings.Join(picks, ", "))
	fmt.Fprintf(b, "add element ip %s services { %s . tcp . %d : goto %s }\n", nftTable, s.VIP, svcPort, svc)
}

func (p *nftImpl) program(ctx context.Context, svcs []svcSpec) (time.Duration, error) {
	var b bytes.Buffer
	// Recreating the table makes svcs the whole set, in one transaction.
	fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "add table ip %s\n", nftTable)
	fmt.Fprintf(&b, "add map ip %s services { type ipv4_addr . inet_proto . inet_service : verdict; }\n", nftTable)
	fmt.Fprintf(&b, "add chain ip %s prerouting { type nat hook prerouting priority dstnat; policy accept; }\n", nftTable)
	fmt.Fprintf(&b, "add rule ip %s prerouting ip daddr . meta l4proto . th dport vmap @services\n", nftTable)
	for _, s := range svcs {
		writeNftService(&b, s)
	}
	d, slab, vmalloc, err := measureKernelMem(func() (time.Duration, error) { return runIn(ctx, p.node.path, b.Bytes(), "nft", "-f", "-") })
	if err != nil {
		return 0, err
	}
	p.mem = memUsage{RulesetBytes: b.Len(), SlabDelta: slab, VmallocDelta: vmalloc}
	return d, nil
}

func (p *nftImpl) addOne(ctx context.Context, svc svcSpec) (time.Duration, error) {
	var b bytes.Buffer
	writeNftService(&b, svc)
	return runIn(ctx, p.node.path, b.Bytes(), "nft", "-f", "-")
}

func (p *nftImpl) memory(context.Context) (memUsage, error) { return p.mem, nil }

func (p *nftImpl) teardown(ctx context.Context) error {
	_, err := runIn(ctx, p.node.path, fmt.Appendf(nil, "table ip %s\ndelete table ip %s\n", nftTable, nftTable), "nft", "-f", "-")
	return err
}
