// Package nstest gives tests their own network namespaces: nodes,
// pods and an "outside", all anonymous, so parallel tests never collide and
// nothing outlives the test process.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/axon-cni/axon/bpf/testenv"
)

// RequireRoot ends the test unless it runs as root, which creating
// namespaces and links needs: a skip, or a failure under CI (see testenv).
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// NS is an anonymous network namespace.
type NS struct {
	Handle netns.NsHandle
	// Path names the namespace for tools and CNI (a /proc fd path, valid
	// while the test runs).
	Path string
	// Netlink is a netlink handle inside the namespace.
	Netlink *netlink.Handle
}

// New creates a namespace with its loopback up, closed when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	h, err := netns.New()
	if serr := netns.Set(orig); serr != nil {
		// This thread is in the wrong namespace: never let it run Go code again.
		t.Fatalf("restore namespace: %v", serr)
	}
	_ = orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		_ = h.Close()
		t.Fatal(err)
	}
	ns := &NS{Handle: h, Path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h)), Netlink: nl}
	t.Cleanup(func() {
		nl.Close()
		_ = h.Close()
	})
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up: %v", err)
	}
	return ns
}

// Do runs fn with the calling goroutine's thread inside ns, for sockets
// that must be created there.
func (ns *NS) Do(fn func() error) error { return do(ns.Handle, fn) }

// DoAt is Do for the namespace at path (such as /var/run/netns/NAME).
func DoAt(path string, fn func() error) error {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer h.Close()
	return do(h, fn)
}

func do(target netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine instead of
		// running other code in the wrong namespace.
		runtime.LockOSThread()
		return fmt.Errorf("restore namespace: %w", err)
	}
	return ferr
}

// Run runs a command inside ns (only the network namespace is switched).
func (ns *NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path, name}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Ping sends count pings to addr from ns and reports whether all came back.
func (ns *NS) Ping(addr string, count int) error {
	out, err := ns.Run("ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", addr)
	if err != nil {
		return fmt.Errorf("ping %s: %w\n%s", addr, err, out)
	}
	return nil
}
