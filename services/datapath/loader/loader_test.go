package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// pinDir returns a fresh directory on bpffs for the test's pins.
func pinDir(t *testing.T) string {
	t.Helper()
	return testenv.BPFFSDir(t, "axon-loader-test-")
}

func addVeth(t *testing.T, ns *nstest.NS, name string) int {
	t.Helper()
	if err := ns.Netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// pinTCX attaches a program to ifindex with a tcx link pinned under the
// loader's link directory, as an earlier build did.
func pinTCX(t *testing.T, ns *nstest.NS, dir, name string, attach func(int) (link.Link, error), ifindex int) {
	t.Helper()
	if err := ns.Do(func() error {
		ln, err := attach(ifindex)
		if err != nil {
			return err
		}
		defer ln.Close()
		return ln.Pin(filepath.Join(dir, "links", name))
	}); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAdoptsEarlierRun starts a loader on the pins of an earlier build:
// a pod's tcx link becomes a tc filter without a moment without program, a
// node link whose device is gone is dropped instead of failing the start,
// and a pod's filter moves to the new program.
func TestOpenAdoptsEarlierRun(t *testing.T) {
	testenv.RequireBPF(t)
	ns := nstest.New(t)
	dir := pinDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := bpfdp.Load(dir, bpfdp.LoadOptions{})
	// Only a missing privilege may skip: a verifier rejection must fail.
	testenv.RequireLoaded(t, "the datapath", err)
	oldPod := addVeth(t, ns, "lxcold")
	pinTCX(t, ns, dir, "lxcold", old.AttachFromPod, oldPod)
	gone := addVeth(t, ns, "gone")
	pinTCX(t, ns, dir, underlayIn, old.AttachFromUnderlay, gone)
	if err := ns.Netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	var first *Loader
	if err := ns.Do(func() (err error) { first, err = Open(dir, bpfdp.LoadOptions{}); return err }); err != nil {
		t.Fatalf("first Open: %v", err)
	}
	for _, name := range []string{"lxcold", underlayIn} {
		if _, err := os.Stat(filepath.Join(dir, "links", name)); !os.IsNotExist(err) {
			t.Errorf("pin %s still there (%v)", name, err)
		}
	}
	if p := first.EndpointProgramProblems("lxcold"); len(p) != 0 {
		t.Errorf("lxcold after the upgrade: %v", p)
	}
	// A pod wired by this build, before its restart.
	filtered := addVeth(t, ns, "lxcnew")
	if err := first.AttachEndpoint(filtered); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	old.Close()

	var l *Loader
	if err := ns.Do(func() (err error) { l, err = Open(dir, bpfdp.LoadOptions{}); return err }); err != nil {
		t.Fatalf("Open on an earlier run's pins: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	// The check compares each filter's program with this loader's.
	for _, name := range []string{"lxcold", "lxcnew"} {
		if p := l.EndpointProgramProblems(name); len(p) != 0 {
			t.Errorf("%s after a restart: %v", name, p)
		}
	}
}

// TestConfigure: the agent's modes reach axon_config as the datapath's own
// values, and a Config without a mode is refused.
func TestConfigure(t *testing.T) {
	testenv.RequireBPF(t)
	ns := nstest.New(t)
	var l *Loader
	err := ns.Do(func() (err error) { l, err = Open(pinDir(t), bpfdp.LoadOptions{}); return err })
	testenv.RequireLoaded(t, "the datapath", err)
	t.Cleanup(func() { _ = l.Close() })
	for _, tc := range []struct {
		name    string
		cfg     bpfmaps.Config
		want    bpfdp.Config
		wantErr error
	}{
		{"native", bpfmaps.Config{Mode: bpfmaps.ModeNative, TunnelIfindex: 4}, bpfdp.Config{Mode: bpfdp.ModeNative}, nil},
		{"tunnel", bpfmaps.Config{Mode: bpfmaps.ModeTunnel, TunnelIfindex: 4, Geneve: true},
			bpfdp.Config{Mode: bpfdp.ModeTunnel, VXLANIfindex: 4, Geneve: true}, nil},
		{"no mode", bpfmaps.Config{}, bpfdp.Config{}, bpfdp.ErrInvalidMode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Configure(tc.cfg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Configure(%+v) = %v, want %v", tc.cfg, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			got, err := l.objs.Config()
			if err != nil || got != tc.want {
				t.Errorf("axon_config = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestEndpointFilters: a pod's veth carries both pod programs, ingress
// (axon_from_pod) and egress (axon_to_pod); the check names either when it
// is missing, the veth stays recognizable as a pod's by the other, and
// attaching again restores it.
func TestEndpointFilters(t *testing.T) {
	testenv.RequireBPF(t)
	ns := nstest.New(t)
	var l *Loader
	err := ns.Do(func() (err error) { l, err = Open(pinDir(t), bpfdp.LoadOptions{}); return err })
	testenv.RequireLoaded(t, "the datapath", err)
	t.Cleanup(func() { _ = l.Close() })
	for _, pf := range podFilters {
		t.Run(pf.dir, func(t *testing.T) {
			name := "lxcf" + pf.dir[:2]
			idx := addVeth(t, ns, name)
			if err := l.AttachEndpoint(idx); err != nil {
				t.Fatal(err)
			}
			if p := l.EndpointProgramProblems(name); len(p) != 0 {
				t.Fatalf("after attach: %v", p)
			}
			link, err := ns.Netlink.LinkByIndex(idx)
			if err != nil {
				t.Fatal(err)
			}
			f, err := l.filterOf(link, pf)
			if err != nil || f == nil {
				t.Fatalf("%s filter: %v, %v", pf.dir, f, err)
			}
			if err := ns.Netlink.FilterDel(f); err != nil {
				t.Fatal(err)
			}
			p := l.EndpointProgramProblems(name)
			if len(p) != 1 || !strings.Contains(p[0], "no program attached to "+name+" ("+pf.dir+", "+pf.name+")") {
				t.Errorf("without the %s filter: %q, want it named", pf.dir, p)
			}
			if !l.IsEndpointDevice(idx) {
				t.Errorf("without the %s filter: not a pod device", pf.dir)
			}
			if err := l.AttachEndpoint(idx); err != nil {
				t.Fatal(err)
			}
			if p := l.EndpointProgramProblems(name); len(p) != 0 {
				t.Errorf("after attaching again: %v", p)
			}
		})
	}
}
