package datapath

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRealServices: a pod reaches a ClusterIP service, TCP and UDP, IPv4
// and IPv6, whose backends are a pod on its node and a pod on another
// node, in tunnel mode (decapsulated on the underlay or by axon_vxlan) and
// in native mode. The client's connected sockets only accept answers from
// the service address, so every echo proves the reverse translation; the
// connections spread over both backends.
func TestRealServices(t *testing.T) {
	requireBPF(t)
	for _, mode := range []struct {
		name         string
		mode         Mode
		decap        bool
		wantForwards func(Stats) uint64
	}{
		{"tunnel underlay decap", ModeTunnel, true, func(s Stats) uint64 { return s.ForwardedTunnel }},
		{"tunnel overlay device", ModeTunnel, false, func(s Stats) uint64 { return s.ForwardedTunnel }},
		{"native", ModeNative, true, func(s Stats) uint64 { return s.ForwardedNative }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			n1, n2, a, b, c := twoNodes(t, mode.mode, mode.decap)
			for _, fam := range []struct {
				name string
				vip  netip.Addr
				v6   bool
			}{{"v4", netip.MustParseAddr("10.96.0.10"), false}, {"v6", netip.MustParseAddr("fd00:96::10"), true}} {
				t.Run(fam.name, func(t *testing.T) {
					backends := []*testPod{b, c}
					if fam.v6 {
						a, backends = a.v6(), []*testPod{b.v6(), c.v6()}
					}
					var bs []Backend
					for i, p := range backends {
						bs = append(bs, Backend{Addr: p.ip, Port: 8080, Local: i == 0})
						serveNamed(t, p, fmt.Sprintf("backend%d", i), 8080)
					}
					for id, proto := range []uint8{protoTCP, protoUDP} {
						// The service exists on the client's node only: its
						// connection tracker holds the flows.
						putServices(t, n1.objs, ServiceEntry{Frontend: frontend(fam.vip, 80, proto), Service: Service{ID: uint32(id + 1), Active: bs}})
					}
					before := n1.stats(t)
					served := map[string]int{}
					for range 12 {
						name, err := tcpNamedEcho(a, netip.AddrPortFrom(fam.vip, 80))
						if err != nil {
							t.Fatalf("TCP to %s: %v", fam.vip, err)
						}
						served["tcp "+name]++
						name, err = udpNamedEcho(a, netip.AddrPortFrom(fam.vip, 80))
						if err != nil {
							t.Fatalf("UDP to %s: %v", fam.vip, err)
						}
						served["udp "+name]++
					}
					if len(served) != 4 {
						t.Errorf("connections served by %v, want both backends over TCP and UDP", served)
					}
					after := n1.stats(t)
					if after.DropNAT != 0 || after.DropNoBackend != 0 || after.DropCTFull != 0 {
						t.Errorf("drops on the client's node: %v", after.Map())
					}
					if mode.wantForwards(after) == mode.wantForwards(before) || after.ForwardedLocal == before.ForwardedLocal {
						t.Errorf("the service's packets did not go to both nodes: %v -> %v", before.Map(), after.Map())
					}
					t.Logf("served %v\nnode1 %v\nnode2 %v", served, after.Map(), n2.stats(t).Map())
				})
			}
		})
	}
}

// twoNodes builds two nodes in mode (tunnel mode with or without
// axon_from_underlay's decapsulation) with dual-stack pods: a client a and
// a backend b on the first, a backend c on the second.
func twoNodes(t *testing.T, mode Mode, decap bool) (n1, n2 *testNode, a, b, c *testPod) {
	t.Helper()
	n1, n2 = newTestNode(t), newTestNode(t)
	for _, n := range []*testNode{n1, n2} {
		n.sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	}
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	u1, u2 := connect(t, n1, n2, ip1, ip2)
	ip61, ip62 := netip.MustParseAddr("2001:db8:ff::1"), netip.MustParseAddr("2001:db8:ff::2")
	if mode == ModeNative {
		addUnderlay6(t, n1, n2, ip61, ip62)
	}
	block1, block2 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")
	block61, block62 := netip.MustParsePrefix("fd00:10:244:1::/64"), netip.MustParsePrefix("fd00:10:244:2::/64")
	for _, s := range []struct {
		n               *testNode
		underlay        int
		self            netip.Addr
		remote, remote6 netip.Prefix
		peer, peer6     netip.Addr
	}{{n1, u1, ip1, block2, block62, ip2, ip62}, {n2, u2, ip2, block1, block61, ip1, ip61}} {
		s.n.sysctl(t, "net/ipv4/ip_forward", "1")
		s.n.sysctl(t, "net/ipv6/conf/all/forwarding", "1")
		if decap {
			s.n.attach(t, s.n.objs.AttachFromUnderlay, s.underlay)
		}
		if mode == ModeNative {
			s.n.addRoute(t, s.remote, s.peer)
			s.n.addRoute(t, s.remote6, s.peer6)
			s.n.setConfig(t, Config{Mode: ModeNative, NodeIP: s.self})
		} else {
			vx := s.n.addVXLAN(t)
			s.n.attach(t, s.n.objs.AttachFromOverlay, vx)
			s.n.setConfig(t, Config{Mode: ModeTunnel, VXLANIfindex: vx, NodeIP: s.self})
		}
		must(t, "put remote", s.n.objs.PutRemote(s.remote, s.peer))
		must(t, "put remote6", s.n.objs.PutRemote(s.remote6, s.peer))
	}
	mtu := 1450
	if mode == ModeNative {
		mtu = 1500
	}
	r1, r2 := netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("10.244.2.1")
	r61, r62 := netip.MustParseAddr("fd00:10:244:1::1"), netip.MustParseAddr("fd00:10:244:2::1")
	a = n1.addPod(t, "lxc-a", netip.MustParseAddr("10.244.1.10"), r1, mtu)
	b = n1.addPod(t, "lxc-b", netip.MustParseAddr("10.244.1.20"), r1, mtu)
	c = n2.addPod(t, "lxc-c", netip.MustParseAddr("10.244.2.30"), r2, mtu)
	n1.addAddr(t, a, netip.MustParseAddr("fd00:10:244:1::a"), r61)
	n1.addAddr(t, b, netip.MustParseAddr("fd00:10:244:1::14"), r61)
	n2.addAddr(t, c, netip.MustParseAddr("fd00:10:244:2::1e"), r62)
	return n1, n2, a, b, c
}

// serveNamed runs a TCP and a UDP server on p's address and port, each
// answering with name: TCP writes "name\n" then echoes, UDP answers each
// datagram with "name:" and the datagram.
func serveNamed(t *testing.T, p *testPod, name string, port uint16) {
	t.Helper()
	addr := netip.AddrPortFrom(p.ip, port).String()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	must(t, "listen", inNetNS(p.ns, func() (err error) {
		if ln, err = net.Listen(network("tcp", p.ip), addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket(network("udp", p.ip), addr)
		return err
	}))
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4096))
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
}

// tcpNamedEcho connects from a to dst, reads the server's name and checks
// an echo.
func tcpNamedEcho(a *testPod, dst netip.AddrPort) (string, error) {
	var c net.Conn
	if err := inNetNS(a.ns, func() (err error) {
		c, err = net.DialTimeout(network("tcp", dst.Addr()), dst.String(), 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read name: %w", err)
	}
	msg := bytes.Repeat([]byte("axon"), 3000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(r, got); err != nil {
		return "", fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return "", errors.New("echo differs")
	}
	return strings.TrimSuffix(name, "\n"), nil
}

// udpNamedEcho sends a datagram from a connected socket in a to dst (which
// accepts answers from dst only) and returns the name that answered.
func udpNamedEcho(a *testPod, dst netip.AddrPort) (string, error) {
	var c *net.UDPConn
	if err := inNetNS(a.ns, func() (err error) {
		c, err = net.DialUDP(network("udp", dst.Addr()), nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for range 3 {
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return "", err
		}
		name, ok := strings.CutSuffix(string(buf[:n]), ":ping")
		if !ok {
			return "", fmt.Errorf("answer %q", buf[:n])
		}
		return name, nil
	}
	return "", errors.New("no answer")
}
