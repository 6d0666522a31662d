package nl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Linux is the real Namespaces: the node's namespace is the one the process
// runs in when NewLinux is called, pods' are opened by path.
type Linux struct {
	node netns.NsHandle
}

var (
	_ Namespaces  = (*Linux)(nil)
	_ LinkWatcher = (*Linux)(nil)
)

// NewLinux returns Namespaces whose node namespace is the calling thread's
// (the agent runs in the node's namespace). Close releases it.
func NewLinux() (*Linux, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("node network namespace: %w", err)
	}
	return &Linux{node: ns}, nil
}

// NewLinuxAt returns Namespaces whose node namespace is ns (a test's
// namespace standing for a node); Close closes ns.
func NewLinuxAt(ns netns.NsHandle) *Linux { return &Linux{node: ns} }

// Close releases the reference to the node's namespace.
func (l *Linux) Close() error { return l.node.Close() }

// Node opens a netlink handle in the node's namespace.
func (l *Linux) Node() (Handle, error) {
	h, err := netlink.NewHandleAt(l.node)
	if err != nil {
		return nil, fmt.Errorf("netlink in the node namespace: %w", err)
	}
	return h, nil
}

// LinkDeletions subscribes to the node namespace's link events (RTM_DELLINK)
// and delivers the deleted links' names until ctx ends or the subscription
// fails.
func (l *Linux) LinkDeletions(ctx context.Context) (<-chan string, error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	node := l.node
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &node}); err != nil {
		close(done) // a socket already opened goes
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			close(done) // closes the socket; its reader then closes updates
			for range updates {
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return // the socket failed (an overflow, say)
				}
				if u.Header.Type != unix.RTM_DELLINK || u.Link == nil {
					continue
				}
				select {
				case out <- u.Attrs().Name:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Open opens the network namespace at path with a netlink handle in it.
func (l *Linux) Open(path string) (*NS, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w: %w", path, ErrNetNS, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netlink in %s: %w: %w", path, ErrNetNS, err)
	}
	return &NS{Handle: h, Ref: int(ns), Close: func() { h.Close(); _ = ns.Close() }}, nil
}

// IsNode reports whether path is the node's network namespace: the same
// namespace (device and inode of nsfs) as the node handle's.
func (l *Linux) IsNode(path string) (bool, error) {
	// O_NONBLOCK: opening a FIFO given as the path must not hang.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w: %w", path, ErrNetNS, err)
	}
	defer unix.Close(fd)
	// A file, directory or device answers ENOTTY; another kind of
	// namespace answers its own type.
	if typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || typ != unix.CLONE_NEWNET {
		return false, fmt.Errorf("%s: %w: not a network namespace", path, ErrNetNS)
	}
	var pod, node unix.Stat_t
	if err := unix.Fstat(fd, &pod); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Fstat(int(l.node), &node); err != nil {
		return false, fmt.Errorf("stat the node network namespace: %w", err)
	}
	return pod.Dev == node.Dev && pod.Ino == node.Ino, nil
}

// Ensure makes path a bind mount of a new network namespace (as `ip netns
// add` makes under /run/netns), unless it is one already.
func (l *Linux) Ensure(path string) error {
	if isNetns(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		// A thread that cannot return to its namespace stays locked, so
		// the runtime discards it with this goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, serr)
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("bind-mount the namespace on %s: %w", path, err)
		}
		errc <- err
	}()
	return <-errc
}

// Remove unmounts and removes a namespace handle made by Ensure; a missing
// one is success.
func (l *Linux) Remove(path string) error { return RemoveBindMount(path) }

// RemoveBindMount is Remove for callers without a Linux (a test tearing a
// node down after its agent stopped).
func RemoveBindMount(path string) error {
	if isNetns(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// isNetns reports whether path is a network namespace handle.
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
