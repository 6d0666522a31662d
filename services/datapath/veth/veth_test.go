package veth

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestHostName(t *testing.T) {
	n := HostName("0123456789abcdef", "eth0")
	if len(n) != 15 || !strings.HasPrefix(n, "lxc") {
		t.Fatalf("HostName = %q, want lxc + 12 hex digits", n)
	}
	if n == HostName("0123456789abcdef", "eth1") {
		t.Fatal("different interfaces share a host name")
	}
}

// TestCreateCheckDelete wires a pod namespace to a node namespace, checks
// the node reaches the pod over the host route, and tears it down.
func TestCreateCheckDelete(t *testing.T) {
	node, pod := nstest.New(t), nstest.New(t)
	p := &Plumber{Namespaces: nl.NewLinuxAt(node.Handle)}
	// The router IP lives on the node (in production on axon_host).
	if out, err := node.Run("ip", "addr", "add", "10.77.0.1/32", "dev", "lo"); err != nil {
		t.Fatal(out, err)
	}
	spec := Spec{
		HostName: HostName("c1", "eth0"), PodIfName: "eth0", NetnsPath: pod.Path, MTU: 1450,
		Addrs:    []netip.Prefix{netip.MustParsePrefix("10.77.0.10/32")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.77.0.1")},
	}
	res, err := p.Create(spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if probs := p.Check(spec, res); len(probs) != 0 {
		t.Fatalf("Check after Create: %v", probs)
	}
	if err := node.Ping("10.77.0.10", 1); err != nil {
		t.Fatalf("node cannot reach the pod: %v", err)
	}
	if err := pod.Ping("10.77.0.1", 1); err != nil {
		t.Fatalf("pod cannot reach its gateway: %v", err)
	}
	if _, err := p.Create(spec); err == nil {
		t.Fatal("second Create of the same interface succeeded")
	}

	// Breaking the pod side shows in Check.
	if _, err := pod.Run("ip", "route", "del", "default"); err != nil {
		t.Fatal(err)
	}
	if probs := p.Check(spec, res); len(probs) != 1 || probs[0].Part != PartPodRoute || !strings.Contains(probs[0].Message, "default route") {
		t.Fatalf("Check after deleting the default route = %v", probs)
	}

	if err := p.Delete(spec.HostName); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(spec.HostName); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := pod.Netlink.LinkByName("eth0"); err == nil {
		t.Fatal("pod interface survived Delete")
	}
	if probs := p.Check(spec, res); len(probs) == 0 {
		t.Fatal("Check after Delete found nothing wrong")
	}
}

func TestCreateRollsBackOnFailure(t *testing.T) {
	node, pod := nstest.New(t), nstest.New(t)
	p := &Plumber{Namespaces: nl.NewLinuxAt(node.Handle)}
	spec := Spec{
		HostName: HostName("c2", "eth0"), PodIfName: "eth0", NetnsPath: pod.Path, MTU: 1500,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.78.0.10/32")},
		// No gateway for the address's family: configuration fails late.
	}
	if _, err := p.Create(spec); err == nil {
		t.Fatal("Create without a gateway succeeded")
	}
	if _, err := node.Netlink.LinkByName(spec.HostName); err == nil {
		t.Fatal("host veth left behind after a failed Create")
	}
	if _, err := pod.Netlink.LinkByName("eth0"); err == nil {
		t.Fatal("pod interface left behind after a failed Create")
	}
	spec.NetnsPath = "/nonexistent/netns"
	if _, err := p.Create(spec); err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Fatalf("Create in a missing netns = %v", err)
	}
}

// With GSOMaxSize (BIG TCP) both ends of the pair take GSO and GRO packets
// of that size, for IPv4 and IPv6; without it they keep the kernel's 64 KiB.
func TestCreateGSOMaxSize(t *testing.T) {
	for _, size := range []int{0, 196608} {
		node, pod := nstest.New(t), nstest.New(t)
		p := &Plumber{Namespaces: nl.NewLinuxAt(node.Handle)}
		spec := Spec{
			HostName: HostName("c1", "eth0"), PodIfName: "eth0", NetnsPath: pod.Path, MTU: 1500,
			Addrs:    []netip.Prefix{netip.MustParsePrefix("10.77.0.10/32")},
			Gateways: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, GSOMaxSize: size,
		}
		if _, err := p.Create(spec); err != nil {
			t.Fatalf("Create with GSOMaxSize %d: %v", size, err)
		}
		want := uint32(size)
		if size == 0 {
			want = 65536
		}
		host, err := node.Netlink.LinkByName(spec.HostName)
		if err != nil {
			t.Fatal(err)
		}
		eth0, err := pod.Netlink.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []netlink.Link{host, eth0} {
			a := l.Attrs()
			if a.GSOMaxSize != want || a.GROMaxSize != want || a.GSOIPv4MaxSize != want || a.GROIPv4MaxSize != want {
				t.Errorf("GSOMaxSize %d: %s has GSO %d GRO %d IPv4 GSO %d IPv4 GRO %d; want %d", size, a.Name,
					a.GSOMaxSize, a.GROMaxSize, a.GSOIPv4MaxSize, a.GROIPv4MaxSize, want)
			}
		}
	}
}
