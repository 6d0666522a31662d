package nltest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

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
		}, NodePath: nlfake.NodePath}
	})
}

func TestKernel(t *testing.T) {
	nstest.RequireRoot(t)
	nltest.Run(t, func(t *testing.T) nltest.Env {
		node := nstest.New(t)
		return nltest.Env{NS: &kernel{node: node}, NewPod: func(t *testing.T) string { return nstest.New(t).Path }, NodePath: node.Path}
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

// LinkDeletions is the real nl.Linux's, in the test's node namespace.
func (k *kernel) LinkDeletions(ctx context.Context) (<-chan string, error) {
	return nl.NewLinuxAt(k.node.Handle).LinkDeletions(ctx)
}

// IsNode is the real nl.Linux's, in the test's node namespace.
func (k *kernel) IsNode(path string) (bool, error) {
	return nl.NewLinuxAt(k.node.Handle).IsNode(path)
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

// Ensure bind-mounts a new namespace at path, as `ip netns add` does,
// unless path is one already.
func (k *kernel) Ensure(path string) error {
	if isNetNS(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_ = f.Close()
	ns, err := newNetNS()
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", int(ns)), path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount a namespace at %s: %w", path, err)
	}
	return nil
}

// newNetNS creates a namespace on a thread that returns to its own.
func newNetNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New()
	if serr := netns.Set(orig); serr != nil {
		// Keep the thread locked: it dies with the goroutine rather than
		// running Go code in the wrong namespace.
		runtime.LockOSThread()
		return 0, fmt.Errorf("restore namespace: %w", serr)
	}
	if err != nil {
		return 0, fmt.Errorf("new namespace: %w", err)
	}
	return ns, nil
}

func isNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Remove unmounts and removes a namespace made by Ensure.
func (k *kernel) Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
