// Command axon-cni is Axon's CNI plugin: container runtimes exec it for
// every pod network attachment, and it asks the node's axon-datapath to do
// the work over a unix socket.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/axon-cni/axon/cni-shim/internal/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.New().Funcs(), version.All, "CNI plugin axon-cni")
}
