package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// DemoPod is a pod sandbox that axon-local wires through the real CNI
// plugin, as a container runtime would, to show the system working.
type DemoPod struct {
	Name, Node, Netns string
	IPs               []string
}

// Conflist is the CNI network configuration a runtime on node n uses.
func (n Node) Conflist() (*libcni.NetworkConfigList, error) {
	b, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "axon",
		"plugins": []map[string]any{{"type": "axon-cni", "socket": n.DatapathSocket, "deleteQueue": n.DeleteQueue}},
	})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// startDemoPods wires perNode pods on every node and arranges for them to
// be deleted (CNI DEL, then the namespace) when the cluster stops.
func (c *Cluster) startDemoPods(ctx context.Context, perNode int) error {
	if perNode == 0 || len(c.Nodes) == 0 {
		return nil
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{c.cfg.BinDir}, filepath.Join(c.cfg.StateDir, "cni-cache"), nil)
	for _, n := range c.Nodes {
		conf, err := n.Conflist()
		if err != nil {
			return err
		}
		for i := 1; i <= perNode; i++ {
			name := fmt.Sprintf("%s-pod-%d", n.Name, i)
			ns := c.cfg.NetnsPrefix + name
			if err := ip("netns", "add", ns); err != nil {
				return err
			}
			rt := &libcni.RuntimeConf{
				ContainerID: "demo-" + name, NetNS: "/var/run/netns/" + ns, IfName: "eth0",
				Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "demo"}, {"K8S_POD_NAME", name}},
			}
			c.running = append(c.running, &process{name: name, cleanup: func() {
				_ = cni.DelNetworkList(context.Background(), conf, rt)
				_ = ip("netns", "del", ns)
			}})
			res, err := cni.AddNetworkList(ctx, conf, rt)
			if err != nil {
				return fmt.Errorf("CNI ADD %s: %w", name, err)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				return err
			}
			p := DemoPod{Name: name, Node: n.Name, Netns: rt.NetNS}
			for _, ipc := range r.IPs {
				p.IPs = append(p.IPs, ipc.Address.IP.String())
			}
			c.Pods = append(c.Pods, p)
		}
	}
	return nil
}

// reachability pings every demo pod's first address from the first pod.
func (c *Cluster) reachability() string {
	if len(c.Pods) < 2 {
		return ""
	}
	if _, err := exec.LookPath("ping"); err != nil {
		return "  (install ping to see the pods reach each other)\n"
	}
	var b bytes.Buffer
	from := c.Pods[0]
	for _, to := range c.Pods[1:] {
		for _, addr := range to.IPs {
			out, err := exec.Command("nsenter", "--net="+from.Netns, "ping", "-c", "1", "-W", "2", addr).CombinedOutput()
			verdict := "reachable"
			if err != nil {
				verdict = "UNREACHABLE"
			} else if i := strings.Index(string(out), "time="); i >= 0 {
				verdict += " (" + strings.TrimPrefix(strings.Fields(string(out)[i:])[0], "time=") + " ms)"
			}
			fmt.Fprintf(&b, "  %s -> %s %s: %s\n", from.Name, to.Name, addr, verdict)
		}
	}
	return b.String()
}
