package datapath

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/bpf/testenv"
)

// sockNode is a namespace with loopback up and the socket programs of
// objs, attached to the cgroup v2 root, acting for it.
func sockNode(t *testing.T, objs *Objects) netns.NsHandle {
	t.Helper()
	ns, h := newTestNS(t)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	var cookie uint64
	if err := inNetNS(ns, func() (err error) { cookie, err = NetnsCookie(); return err }); err != nil {
		testenv.RequireKernel(t, "SO_NETNS_COOKIE", 5, 14, err)
	}
	if err := objs.SetSocketNetns(cookie); err != nil {
		t.Fatal(err)
	}
	cg, err := Cgroup2Mount()
	if err != nil {
		testenv.Unavailable(t, "cgroup v2", err)
	}
	for _, p := range objs.SocketPrograms() {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: p.Attach, Program: p.Program})
		if err != nil {
			t.Fatalf("attach %s to %s: %v", p.Name, cg, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	return ns
}

// echoIn serves TCP (the listener's address, then close) and UDP (each
// datagram back to its sender) on addr (loopback) in ns.
func echoIn(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	var (
		l  net.Listener
		pc net.PacketConn
	)
	if err := inNetNS(ns, func() (err error) {
		if l, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); pc.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, addr)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// TestSocketLB: a node's process reaches a frontend's backend over TCP,
// connected UDP and unconnected UDP, IPv4 and IPv6, and sees only the
// frontend (getpeername, recvmsg); another namespace's sockets are left
// alone; a frontend without backends refuses connect() (ECONNREFUSED).
func TestSocketLB(t *testing.T) {
	objs := mustLoad(t, "")
	node := sockNode(t, objs)
	other, oh := newTestNS(t)
	if lo, err := oh.LinkByName("lo"); err != nil || oh.LinkSetUp(lo) != nil {
		t.Fatalf("loopback up: %v", err)
	}
	const port = 8080
	echoIn(t, node, fmt.Sprintf("127.0.0.1:%d", port))
	echoIn(t, node, fmt.Sprintf("[::1]:%d", port))
	var entries []ServiceEntry
	for i, fe := range []string{"10.96.7.1", "fd00:96::7:1"} {
		be := netip.MustParseAddr("127.0.0.1")
		if i == 1 {
			be = netip.IPv6Loopback()
		}
		for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			entries = append(entries, ServiceEntry{
				Frontend: Frontend{Addr: netip.MustParseAddr(fe), Port: 80, Proto: proto},
				Service:  Service{ID: uint32(len(entries) + 1), Active: []Backend{{Addr: be, Port: port, Local: true}}},
			})
		}
	}
	entries = append(entries, ServiceEntry{
		Frontend: Frontend{Addr: netip.MustParseAddr("10.96.7.2"), Port: 80, Proto: unix.IPPROTO_TCP},
		Service:  Service{ID: 10},
	})
	if err := objs.PutServices(entries); err != nil {
		t.Fatal(err)
	}
	for _, fe := range []string{"10.96.7.1:80", "[fd00:96::7:1]:80"} {
		t.Run(fe, func(t *testing.T) {
			err := inNetNS(node, func() error {
				c, err := net.DialTimeout("tcp", fe, 2*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				if got := c.RemoteAddr().String(); got != fe {
					return fmt.Errorf("tcp peer %s, want the frontend %s", got, fe)
				}
				if _, err := io.ReadAll(c); err != nil {
					return fmt.Errorf("tcp: %w", err)
				}
				// Connected UDP: only datagrams from the peer arrive.
				u, err := net.Dial("udp", fe)
				if err != nil {
					return err
				}
				defer u.Close()
				if got := u.RemoteAddr().String(); got != fe {
					return fmt.Errorf("udp peer %s, want the frontend %s", got, fe)
				}
				if err := udpRoundTrip(u.(*net.UDPConn), nil); err != nil {
					return fmt.Errorf("connected udp: %w", err)
				}
				// Unconnected UDP: the answer comes from the frontend.
				pc, err := net.ListenPacket("udp", ":0")
				if err != nil {
					return err
				}
				defer pc.Close()
				return udpRoundTrip(pc, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fe)))
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// An IPv6 socket to the IPv4 frontend, IPv4-mapped, reaches its
	// backend over IPv4.
	if err := inNetNS(node, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		fe := &unix.SockaddrInet6{Port: 80, Addr: netip.MustParseAddr("::ffff:10.96.7.1").As16()}
		if err := unix.Connect(fd, fe); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			return err
		}
		if p, ok := peer.(*unix.SockaddrInet6); !ok || p.Addr != fe.Addr || p.Port != fe.Port {
			return fmt.Errorf("peer %+v, want the frontend %+v", peer, fe)
		}
		return nil
	}); err != nil {
		t.Errorf("IPv4-mapped frontend from an IPv6 socket: %v", err)
	}
	// Another namespace's sockets are not translated: it has no route.
	if err := inNetNS(other, func() error {
		_, err := net.DialTimeout("tcp", "10.96.7.1:80", 2*time.Second)
		return err
	}); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("from another namespace: %v, want ENETUNREACH (untranslated)", err)
	}
	if err := inNetNS(node, func() error {
		_, err := net.DialTimeout("tcp", "10.96.7.2:80", 2*time.Second)
		return err
	}); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("frontend without backends: %v, want ECONNREFUSED", err)
	}
}

// udpRoundTrip sends a datagram (to to, unless c is connected) and checks
// that it comes back from to (or the peer).
func udpRoundTrip(c net.PacketConn, to net.Addr) error {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	var err error
	if to == nil {
		_, err = c.(net.Conn).Write([]byte("ping"))
	} else {
		_, err = c.WriteTo([]byte("ping"), to)
	}
	if err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ping" {
		return fmt.Errorf("answer %q", buf[:n])
	}
	if to != nil && from.String() != to.String() {
		return fmt.Errorf("answer from %s, want %s", from, to)
	}
	return nil
}

// TestSockLayout checks the hand-written Go view of axon/sock.h against
// the sock object's map sizes.
func TestSockLayout(t *testing.T) {
	spec, err := loadSock()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want uint32
	}{
		{"axon_sock_config value", spec.Maps[sockMapAxonSockConfig].ValueSize, uint32(unsafe.Sizeof(sockConfig{}))},
		{"axon_sock_rev key", spec.Maps[sockMapAxonSockRev].KeySize, uint32(unsafe.Sizeof(sockRevKey{}))},
		{"axon_sock_rev value", spec.Maps[sockMapAxonSockRev].ValueSize, uint32(unsafe.Sizeof(sockRev{}))},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes in C, %d in Go", c.what, c.got, c.want)
		}
	}
}
