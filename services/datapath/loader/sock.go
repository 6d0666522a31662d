package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// Socket-level load balancing for the node's own processes
//
// Pods' packets are translated one by one (axon_from_pod and the paths
// delivering to pods), but the node's own packets pass none of those
// programs. Rather than routing the service ranges to a device whose
// programs would translate the node's packets both ways (and keep
// connection tracking for them), the socket programs (bpf/src/sock.c)
// translate once per socket, when it picks its peer: connect() and
// sendmsg() to a frontend go to a backend, recvmsg() and getpeername()
// show the frontend. That is Cilium's choice too: no per-packet cost, no
// tracking, and the node reaches backends by its ordinary routes.
//
// The programs attach to the root of the cgroup v2 hierarchy with cgroup
// links (which let several programs share a hook), pinned beside the tcx
// links: a restarted agent moves them to its new programs atomically
// (adoptLinks), and they keep working while no agent runs. Every node
// simulated on one machine attaches its own set to the same root cgroup;
// each acts only for sockets of its node's network namespace, whose cookie
// the agent writes (axon_sock_config). Pod sockets live in the pods'
// namespaces and keep the per-packet translation.

// sockLinkPrefix starts the pin names of the socket programs' links.
const sockLinkPrefix = "sock-"

// fallbackCgroup2 is where the cgroup v2 hierarchy is mounted when the
// machine has not mounted it (cgroup v1 only).
const fallbackCgroup2 = "/run/axon/cgroup2"

// socketProgram returns the socket program a link pin name stands for.
func (l *Loader) socketProgram(name string) *ebpf.Program {
	for _, p := range l.objs.SocketPrograms() {
		if sockLinkPrefix+p.Name == name {
			return p.Program
		}
	}
	return nil
}

// AttachSocketLB names the calling thread's network namespace (the
// agent's, the node's) as the one whose sockets the socket programs
// translate, and attaches them to the cgroup v2 root (mounting the
// hierarchy if the machine has not). Links of an earlier run, moved to
// these programs by Open, are kept.
func (l *Loader) AttachSocketLB() error {
	cookie, err := bpfdp.NetnsCookie()
	if err != nil {
		return err
	}
	if err := l.objs.SetSocketNetns(cookie); err != nil {
		return err
	}
	cg, err := cgroup2Root()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.objs.SocketPrograms() {
		name := sockLinkPrefix + p.Name
		if _, ok := l.links[name]; ok {
			continue
		}
		ln, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: p.Attach, Program: p.Program})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", p.Name, cg, err)
		}
		if err := ln.Pin(filepath.Join(l.linkDir, name)); err != nil {
			_ = ln.Close()
			return fmt.Errorf("pin link %s: %w", name, err)
		}
		l.links[name] = ln
	}
	return nil
}

// cgroup2Root returns the root of the cgroup v2 hierarchy, mounting it on
// fallbackCgroup2 if it is nowhere.
func cgroup2Root() (string, error) {
	dir, err := bpfdp.Cgroup2Mount()
	if !errors.Is(err, bpfdp.ErrNoCgroup2) {
		return dir, err
	}
	if err := os.MkdirAll(fallbackCgroup2, 0o700); err != nil {
		return "", fmt.Errorf("create cgroup v2 mount point: %w", err)
	}
	if err := unix.Mount("cgroup2", fallbackCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("mount cgroup v2 on %s: %w", fallbackCgroup2, err)
	}
	return fallbackCgroup2, nil
}

// DestroySockets destroys the node's connected UDP sockets the socket
// programs sent to a backend, for which match returns true (sock_diag's
// SOCK_DESTROY, in the namespace of the loader's netlink handle for the
// listing and of the calling thread for the destruction: the agent's).
func (l *Loader) DestroySockets(match func(bpfmaps.Flow) bool) (int, error) {
	n := 0
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := l.nl.SocketDiagUDP(family)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return n, fmt.Errorf("list UDP sockets: %w", err)
		}
		for _, s := range socks {
			if s.ID.DestinationPort == 0 {
				continue // not connected
			}
			local, ok1 := addrPort(s.ID.Source, s.ID.SourcePort)
			peer, ok2 := addrPort(s.ID.Destination, s.ID.DestinationPort)
			if !ok1 || !ok2 {
				continue
			}
			cookie := uint64(s.ID.Cookie[0]) | uint64(s.ID.Cookie[1])<<32
			tr, ok, err := l.objs.SocketTranslation(cookie, peer)
			if err != nil {
				return n, err
			}
			if !ok || !match(bpfmaps.Flow{ServiceID: tr.ServiceID, Proto: unix.IPPROTO_UDP, Client: local, Frontend: tr.Frontend, Backend: peer}) {
				continue
			}
			if err := destroySocket(family, unix.IPPROTO_UDP, s.ID); err != nil {
				// Closed meanwhile: nothing left to do.
				if !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("destroy UDP socket %s -> %s: %w", local, peer, err))
				}
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

func addrPort(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port), ok
}

// sockDestroy is SOCK_DESTROY (linux/sock_diag.h).
const sockDestroy = 21

// destroySocket sends SOCK_DESTROY for the socket id (as sock_diag listed
// it, cookie included) over NETLINK_SOCK_DIAG, and waits for the answer.
func destroySocket(family, proto uint8, id netlink.SocketID) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// struct nlmsghdr, then struct inet_diag_req_v2.
	const hdrLen, reqLen = unix.SizeofNlMsghdr, 56
	msg := make([]byte, hdrLen+reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], sockDestroy)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1) // sequence
	r := msg[hdrLen:]
	r[0], r[1] = family, proto
	ne.PutUint32(r[4:], 0xffffffff) // every state
	binary.BigEndian.PutUint16(r[8:], id.SourcePort)
	binary.BigEndian.PutUint16(r[10:], id.DestinationPort)
	if family == unix.AF_INET {
		copy(r[12:16], id.Source.To4())
		copy(r[28:32], id.Destination.To4())
	} else {
		copy(r[12:28], id.Source.To16())
		copy(r[28:44], id.Destination.To16())
	}
	ne.PutUint32(r[44:], id.Interface)
	ne.PutUint32(r[48:], id.Cookie[0])
	ne.PutUint32(r[52:], id.Cookie[1])
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send SOCK_DESTROY: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("receive SOCK_DESTROY answer: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fmt.Errorf("parse SOCK_DESTROY answer: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(ne.Uint32(m.Data)); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
	}
	return fmt.Errorf("SOCK_DESTROY: no answer")
}
