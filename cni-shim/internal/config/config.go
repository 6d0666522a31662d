// Package config parses and validates axon-cni's network configuration and
// the CNI_ARGS a runtime passes with it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultSocket is where axon-datapath serves the node's API.
const DefaultSocket = "/run/axon/datapath.sock"

// DefaultDeleteQueue is where DELs wait while the datapath is down; the
// datapath replays them when it is back (its --cni-delete-queue).
const DefaultDeleteQueue = "/run/axon/cni-deletes"

// DefaultTimeout bounds every call to the datapath; kubelet's own CNI
// deadline is minutes, so a stuck datapath fails fast and is retried.
const DefaultTimeout = 30 * time.Second

// PoolAnnotation on a pod asks for addresses from the named IPAM pool(s),
// comma-separated.
const PoolAnnotation = "ipam.axon.io/pool"

// NetConf is axon-cni's network configuration (one plugin of a conflist).
type NetConf struct {
	types.PluginConf

	// Socket is the datapath's unix socket.
	Socket string `json:"socket,omitempty"`
	// Timeout bounds each call to the datapath, as a Go duration ("30s").
	Timeout Duration `json:"timeout,omitempty"`
	// MTU of the pod's interface; 0 leaves it to the datapath.
	MTU uint32 `json:"mtu,omitempty"`
	// Pools are IPAM pools to allocate from; empty lets IPAM choose.
	Pools []string `json:"pools,omitempty"`
	// DeleteQueue is the directory DELs are queued in while the datapath
	// is unreachable.
	DeleteQueue string `json:"deleteQueue,omitempty"`
	// RuntimeConfig holds the capability arguments the runtime passes.
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitzero"`
	// Attachments is GC's list of still valid attachments. It shadows the
	// embedded PluginConf field so that a list sent as null or [] (a node
	// without pods) is told from no list at all.
	Attachments GCAttachments `json:"cni.dev/valid-attachments,omitzero"`
	// LegacyAttachments is the same list under the key an early text of
	// CNI 1.1.0 used; libcni sends both keys.
	LegacyAttachments GCAttachments `json:"cni.dev/attachments,omitzero"`
}

// GCAttachments is a GC list of attachments and whether it was sent.
type GCAttachments struct {
	List    []types.GCAttachment
	Present bool
}

// UnmarshalJSON records that the key was present, even as null.
func (g *GCAttachments) UnmarshalJSON(b []byte) error {
	g.Present = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &g.List)
}

// MarshalJSON writes the list.
func (g GCAttachments) MarshalJSON() ([]byte, error) { return json.Marshal(g.List) }

// RuntimeConfig is the subset of CNI capability arguments axon-cni uses.
type RuntimeConfig struct {
	// IPs are requested addresses ("ips" capability), with or without a
	// prefix length.
	IPs []string `json:"ips,omitempty"`
	// PodAnnotations are the pod's annotations (containerd passes them with
	// the "io.kubernetes.cri.pod-annotations" capability).
	PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	// PortMappings are the pod's host ports ("portMappings" capability).
	PortMappings []PortMapping `json:"portMappings,omitempty"`
}

// PortMapping is one entry of the "portMappings" capability (the CNI
// conventions' shape).
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
	HostIP        string `json:"hostIP,omitempty"`
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON parses a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timeout must be a duration string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("timeout: %w", err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Parse decodes and validates a network configuration. Errors are
// *types.Error with the CNI spec's codes.
func Parse(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
		}
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.DeleteQueue == "" {
		c.DeleteQueue = DefaultDeleteQueue
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = DefaultTimeout
	}
	if err := c.validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration", err.Error())
	}
	return &c, nil
}

func (c *NetConf) validate() error {
	var errs []error
	if c.CNIVersion == "" {
		errs = append(errs, errors.New("cniVersion is required"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if !strings.HasPrefix(c.Socket, "/") {
		errs = append(errs, fmt.Errorf("socket must be an absolute path, got %q", c.Socket))
	}
	if !strings.HasPrefix(c.DeleteQueue, "/") {
		errs = append(errs, fmt.Errorf("deleteQueue must be an absolute path, got %q", c.DeleteQueue))
	}
	if c.Timeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("timeout must be positive, got %s", c.Timeout))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu must be 0 or between 576 and 65535, got %d", c.MTU))
	}
	for _, p := range c.Pools {
		if p == "" {
			errs = append(errs, errors.New("pools must not contain an empty name"))
		}
	}
	if _, err := c.RequestedIPs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RequestedIPs returns runtimeConfig.ips as bare addresses, at most one per
// family.
func (c *NetConf) RequestedIPs() ([]string, error) {
	var out []string
	var seen4, seen6 bool
	for _, s := range c.RuntimeConfig.IPs {
		addr, err := parseIP(s)
		if err != nil {
			return nil, fmt.Errorf("runtimeConfig.ips: %w", err)
		}
		seen := &seen4
		if addr.Is6() {
			seen = &seen6
		}
		if *seen {
			return nil, fmt.Errorf("runtimeConfig.ips: more than one address of the family of %s", addr)
		}
		*seen = true
		out = append(out, addr.String())
	}
	return out, nil
}

func parseIP(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%q is not an address: %w", s, err)
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an address: %w", s, err)
	}
	return a.Unmap(), nil
}

// MaxPodAnnotationBytes is Kubernetes' limit on a pod's annotations, keys
// and values together (256 KiB), which the datapath holds CreateEndpoint to.
const MaxPodAnnotationBytes = 256 << 10

// CheckPodAnnotations refuses pod annotations over Kubernetes' limit: no
// real pod has them, and sent on they would fail the ADD with gRPC's own
// RESOURCE_EXHAUSTED (over the datapath's 4 MiB message limit) or its
// INVALID_ARGUMENT, instead of saying what is wrong.
func (c *NetConf) CheckPodAnnotations() error {
	total := 0
	for k, v := range c.RuntimeConfig.PodAnnotations {
		total += len(k) + len(v)
	}
	if total > MaxPodAnnotationBytes {
		return fmt.Errorf("runtimeConfig %q: the pod's annotations take %d bytes, more than Kubernetes' limit of %d",
			"io.kubernetes.cri.pod-annotations", total, MaxPodAnnotationBytes)
	}
	return nil
}

// RequestedPools returns the pools to allocate from: the pod's pool
// annotation wins over the network configuration's pools.
func (c *NetConf) RequestedPools() []string {
	if v := c.RuntimeConfig.PodAnnotations[PoolAnnotation]; v != "" {
		var pools []string
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				pools = append(pools, p)
			}
		}
		return pools
	}
	return c.Pools
}

// K8sArgs are the CNI_ARGS Kubernetes runtimes pass.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by the runtimes
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are always ignored, as
// every Kubernetes runtime sends keys a given plugin does not know.
func ParseArgs(s string) (*K8sArgs, map[string]string, error) {
	a := &K8sArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, a); err != nil {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	raw := map[string]string{}
	for kv := range strings.SplitSeq(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			raw[k] = v
		}
	}
	return a, raw, nil
}
