package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The values of the socket programs' own maps (axon/sock.h). The sock
// object is built without Go types (gen.go): these mirror the C layout.
type (
	sockConfig struct {
		NetnsCookie uint64
		Flags       uint32
		Pad         uint32
	}
	sockRevKey struct {
		Cookie uint64
		Addr   [16]byte
		Port   uint16 // network order, read natively
		Pad    uint16
		Pad2   uint32
	}
	sockRev struct {
		Addr      [16]byte
		Port      uint16 // network order, read natively
		Pad       uint16
		ServiceID uint32
	}
)

// SocketProgram is one of the socket load balancer's programs and the
// cgroup hook it belongs to.
type SocketProgram struct {
	// Name is the program's name (axon_sock_connect4, ...).
	Name    string
	Attach  ebpf.AttachType
	Program *ebpf.Program
}

// SocketPrograms are the programs that load-balance the node's own
// sockets, to attach to the cgroup v2 root (as links: several nodes on one
// machine attach theirs side by side). Each acts only for sockets of the
// network namespace [Objects.SetSocketNetns] names.
func (o *Objects) SocketPrograms() []SocketProgram {
	return []SocketProgram{
		{sockProgAxonSockConnect4, ebpf.AttachCGroupInet4Connect, o.sock.AxonSockConnect4},
		{sockProgAxonSockConnect6, ebpf.AttachCGroupInet6Connect, o.sock.AxonSockConnect6},
		{sockProgAxonSockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg, o.sock.AxonSockSendmsg4},
		{sockProgAxonSockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg, o.sock.AxonSockSendmsg6},
		{sockProgAxonSockRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg, o.sock.AxonSockRecvmsg4},
		{sockProgAxonSockRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg, o.sock.AxonSockRecvmsg6},
		{sockProgAxonSockGetpeername4, ebpf.AttachCgroupInet4GetPeername, o.sock.AxonSockGetpeername4},
		{sockProgAxonSockGetpeername6, ebpf.AttachCgroupInet6GetPeername, o.sock.AxonSockGetpeername6},
	}
}

// NetnsCookie returns the cookie of the calling thread's network namespace
// (SO_NETNS_COOKIE, Linux 5.14+), as the programs' bpf_get_netns_cookie
// sees it.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: socket: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	return c, nil
}

// SetSocketNetns names the network namespace (by [NetnsCookie]) whose
// sockets the socket programs translate; 0 stops them translating any.
func (o *Objects) SetSocketNetns(cookie uint64) error {
	if err := o.sockConfig.Put(uint32(0), &sockConfig{NetnsCookie: cookie}); err != nil {
		return fmt.Errorf("write socket config: %w", err)
	}
	return nil
}

// SocketNetns returns the namespace cookie [Objects.SetSocketNetns] wrote.
func (o *Objects) SocketNetns() (uint64, error) {
	var c sockConfig
	if err := o.sockConfig.Lookup(uint32(0), &c); err != nil {
		return 0, fmt.Errorf("read socket config: %w", err)
	}
	return c.NetnsCookie, nil
}

// SocketTranslation is what the socket programs did to a node's socket:
// it was sent to Backend instead of Frontend, an address of the frontend
// entry ServiceID.
type SocketTranslation struct {
	Frontend  netip.AddrPort
	ServiceID uint32
}

// SocketTranslation returns what the socket programs recorded for the
// socket with the given cookie (SO_COOKIE, or sock_diag's) and the backend
// it was sent to; ok is false for a socket they did not translate (or
// whose record aged out).
func (o *Objects) SocketTranslation(cookie uint64, backend netip.AddrPort) (_ SocketTranslation, ok bool, err error) {
	k := sockRevKey{Cookie: cookie, Addr: addr16(backend.Addr().Unmap()), Port: port16(backend.Port())}
	var v sockRev
	if err := o.sockRev.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return SocketTranslation{}, false, nil
		}
		return SocketTranslation{}, false, fmt.Errorf("look up socket translation: %w", err)
	}
	return SocketTranslation{Frontend: netip.AddrPortFrom(addrFrom16(v.Addr), portFrom16(v.Port)), ServiceID: v.ServiceID}, true, nil
}

// ErrNoCgroup2: no cgroup v2 hierarchy is mounted. Test with errors.Is.
var ErrNoCgroup2 = errors.New("datapath: no cgroup v2 mount")

// Cgroup2Mount returns where the cgroup v2 hierarchy is mounted (its root
// cgroup, where the socket programs attach), as /proc/self/mounts lists
// it: /sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a
// hybrid one. Without one it returns [ErrNoCgroup2].
func Cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", ErrNoCgroup2
}
