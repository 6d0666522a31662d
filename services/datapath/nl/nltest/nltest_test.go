package nltest_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nl/nltest"
	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestFake(t *testing.T) {
	nltest.Run(t, func(t *testing.T) nltest.Env {
		f := nlfake.New()
		n := 0
		return nltest.Env{NS: f, NewPod: func(t *testing.T) string {
			n++
			path := fmt.Sprintf("/run/netns/pod%d", n)
			f.AddNamespace(path)
			t.Cleanup(func() { f.DeleteNamespace(path) })
			return path
		}}
	})
}

func TestKernel(t *testing.T) {
	nstest.RequireRoot(t)
	nltest.Run(t, func(t *testing.T) nltest.Env {
		return nltest.Env{NS: &kernel{node: nstest.New(t)}, NewPod: func(t *testing.T) string { return nstest.New(t).Path }}
	})
}

// kernel is a minimal real nl.Namespaces whose node namespace is an
// anonymous one of the test, so the scenarios never touch the host's.
type kernel struct{ node *nstest.NS }

func (k *kernel) Node() (nl.Handle, error) {
	h, err := netlink.NewHandleAt(k.node.Handle)
	if err != nil {
		return nil, fmt.Errorf("netlink in the node namespace: %w", err)
	}
	return h, nil
}

func (k *kernel) Open(path string) (*nl.NS, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", path, nl.ErrNetNS, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netlink in %s: %w: %w", path, nl.ErrNetNS, err)
	}
	return &nl.NS{Handle: h, Ref: int(ns), Close: func() { h.Close(); _ = ns.Close() }}, nil
}

// Ensure and Remove (bind-mounted namespaces) are not among the scenarios.
func (k *kernel) Ensure(string) error { return errors.ErrUnsupported }
func (k *kernel) Remove(string) error { return errors.ErrUnsupported }
