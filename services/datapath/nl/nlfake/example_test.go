package nlfake_test

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// A test makes the third RouteReplace in a pod's namespace fail, and later
// checks what the code under test left behind.
func ExampleFake_FailOn() {
	f := nlfake.New()
	f.AddNamespace("/run/netns/pod1")
	f.FailOn("/run/netns/pod1", "RouteReplace", 3, errors.New("injected"))

	node, _ := f.Node()
	defer node.Close()
	pod, _ := f.Open("/run/netns/pod1")
	defer pod.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lxc0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod.Ref)}
	_ = node.LinkAdd(v)
	eth0, _ := pod.Handle.LinkByName("eth0")
	_ = pod.Handle.LinkSetUp(eth0)
	for i := range 3 {
		dst := fmt.Sprintf("10.0.0.%d/32", i+1)
		_, ipnet, _ := net.ParseCIDR(dst)
		err := pod.Handle.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipnet, Scope: netlink.SCOPE_LINK})
		fmt.Println(dst, err)
	}
	// The code under test would roll back here; the fake shows what is left.
	_ = node.LinkDel(v)
	fmt.Println(len(f.Routes("/run/netns/pod1")), len(f.Links(nlfake.NodeNS)))
	// Output:
	// 10.0.0.1/32 <nil>
	// 10.0.0.2/32 <nil>
	// 10.0.0.3/32 injected
	// 0 1
}
