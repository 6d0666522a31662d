// Package plugin implements the CNI verbs of axon-cni as calls to the node's
// axon-datapath over its unix socket. It holds no networking logic: the
// datapath does the work, the shim translates between CNI and gRPC.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"

	"github.com/axon-cni/axon/cni-shim/internal/config"
)

// Plugin-specific CNI error codes (the spec reserves 100 and up for plugins).
const (
	// ErrAddressExhausted: IPAM has no free address in the pool(s).
	ErrAddressExhausted uint = 101
	// ErrPrecondition: the datapath refused the request in its current state.
	ErrPrecondition uint = 102
)

// Plugin runs CNI verbs against the datapath listening on the socket the
// network configuration names.
type Plugin struct {
	// Out receives ADD's result.
	Out io.Writer
}

// New returns a Plugin that prints results to standard output.
func New() *Plugin { return &Plugin{Out: os.Stdout} }

// Funcs returns the verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// call parses the configuration and runs fn with a datapath client under
// the configured deadline.
func (p *Plugin) call(stdin []byte, fn func(context.Context, *config.NetConf, datapathv1alpha1.DatapathServiceClient) error) error {
	conf, err := config.Parse(stdin)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+conf.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid datapath socket", err.Error())
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout.Duration)
	defer cancel()
	return fn(ctx, conf, datapathv1alpha1.NewDatapathServiceClient(conn))
}

func attachment(args *skel.CmdArgs) (*datapathv1alpha1.Attachment, error) {
	if args.ContainerID == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is required", "")
	}
	if args.IfName == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME is required", "")
	}
	return &datapathv1alpha1.Attachment{ContainerId: args.ContainerID, InterfaceName: args.IfName}, nil
}

// Add wires the container's interface (CNI ADD) and prints the result.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	att, err := attachment(args)
	if err != nil {
		return err
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
	}
	if err := checkNetns(args.Netns); err != nil {
		return err
	}
	k8s, rawArgs, err := config.ParseArgs(args.Args)
	if err != nil {
		return err
	}
	return p.call(args.StdinData, func(ctx context.Context, conf *config.NetConf, dp datapathv1alpha1.DatapathServiceClient) error {
		ips, err := conf.RequestedIPs()
		if err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "invalid runtimeConfig", err.Error())
		}
		pms, err := portMappings(conf.RuntimeConfig.PortMappings)
		if err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "invalid runtimeConfig", err.Error())
		}
		// Checked on ADD only: a DEL of a pod refused here must still
		// succeed.
		if err := conf.CheckPodAnnotations(); err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "invalid runtimeConfig", err.Error())
		}
		resp, err := dp.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{
			Attachment:     att,
			Network:        conf.Name,
			NetnsPath:      args.Netns,
			PodNamespace:   string(k8s.K8S_POD_NAMESPACE),
			PodName:        string(k8s.K8S_POD_NAME),
			PodUid:         string(k8s.K8S_POD_UID),
			Annotations:    conf.RuntimeConfig.PodAnnotations,
			RequestedPools: conf.RequestedPools(),
			RequestedIps:   ips,
			Mtu:            conf.MTU,
			CniArgs:        rawArgs,
			PortMappings:   pms,
		})
		if err != nil {
			return cniError("create endpoint", err, false)
		}
		result, err := toResult(resp.GetEndpoint())
		if err != nil {
			return types.NewError(types.ErrInternal, "datapath returned an invalid endpoint", err.Error())
		}
		versioned, err := result.GetAsVersion(conf.CNIVersion)
		if err != nil {
			return types.NewError(types.ErrIncompatibleCNIVersion, "convert result", err.Error())
		}
		return versioned.PrintTo(p.Out)
	})
}

// Del removes the container's interface (CNI DEL). Unknown attachments are
// success, as the spec requires. While the datapath is unreachable the DEL
// is queued on disk for it to replay, and succeeds: a runtime must be able
// to remove a pod from a node whose agent is restarting.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	att, err := attachment(args)
	if err != nil {
		return err
	}
	return p.call(args.StdinData, func(ctx context.Context, conf *config.NetConf, dp datapathv1alpha1.DatapathServiceClient) error {
		_, err := dp.DeleteEndpoint(ctx, &datapathv1alpha1.DeleteEndpointRequest{Attachment: att, NetnsPath: args.Netns})
		switch status.Code(err) {
		case codes.OK, codes.NotFound:
			return nil
		case codes.Unavailable, codes.DeadlineExceeded:
			if qerr := QueueDelete(conf.DeleteQueue, att); qerr != nil {
				return types.NewError(types.ErrTryAgainLater, "axon-datapath unavailable and the delete could not be queued", qerr.Error())
			}
			return nil
		default:
			return cniError("delete endpoint", err, false)
		}
	})
}

// Check verifies the container's interface is still as ADD left it.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	att, err := attachment(args)
	if err != nil {
		return err
	}
	return p.call(args.StdinData, func(ctx context.Context, conf *config.NetConf, dp datapathv1alpha1.DatapathServiceClient) error {
		// The spec requires the result of the ADD being checked.
		if conf.PrevResult == nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "CHECK without prevResult", "the runtime must pass the result of the ADD being checked")
		}
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
		}
		var expected []string
		for _, ip := range prev.IPs {
			expected = append(expected, ip.Address.String())
		}
		resp, err := dp.CheckEndpoint(ctx, &datapathv1alpha1.CheckEndpointRequest{
			Attachment: att, NetnsPath: args.Netns, ExpectedAddresses: expected,
		})
		if err != nil {
			return cniError("check endpoint", err, true)
		}
		if !resp.GetHealthy() {
			var msgs []string
			for _, pr := range resp.GetProblems() {
				msgs = append(msgs, pr.GetMessage())
			}
			return types.NewError(types.ErrInternal, "endpoint is not as created", fmt.Sprint(msgs))
		}
		return nil
	})
}

// GC removes every endpoint of this network not in cni.dev/valid-attachments.
// A GC without the list is refused: read as empty, it would remove every pod
// of the node.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	return p.call(args.StdinData, func(ctx context.Context, conf *config.NetConf, dp datapathv1alpha1.DatapathServiceClient) error {
		attachments := conf.Attachments
		if !attachments.Present {
			attachments = conf.LegacyAttachments
		}
		if !attachments.Present {
			return types.NewError(types.ErrInvalidNetworkConfig, "GC without cni.dev/valid-attachments",
				"the runtime sent no list of valid attachments; refusing to remove every endpoint of network "+conf.Name)
		}
		valid := make([]*datapathv1alpha1.Attachment, 0, len(attachments.List))
		for _, a := range attachments.List {
			valid = append(valid, &datapathv1alpha1.Attachment{ContainerId: a.ContainerID, InterfaceName: a.IfName})
		}
		_, err := dp.GarbageCollectEndpoints(ctx, &datapathv1alpha1.GarbageCollectEndpointsRequest{ValidAttachments: valid, Network: conf.Name})
		if err != nil {
			return cniError("garbage-collect endpoints", err, false)
		}
		return nil
	})
}

// Status reports whether the node can take ADDs (CNI STATUS).
func (p *Plugin) Status(args *skel.CmdArgs) error {
	return p.call(args.StdinData, func(ctx context.Context, _ *config.NetConf, dp datapathv1alpha1.DatapathServiceClient) error {
		resp, err := dp.CheckReady(ctx, &datapathv1alpha1.CheckReadyRequest{})
		if err != nil {
			return types.NewError(types.ErrPluginNotAvailable, "axon-datapath is not reachable", err.Error())
		}
		switch resp.GetReadiness() {
		case datapathv1alpha1.ReadinessState_READINESS_STATE_READY:
			return nil
		case datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED:
			return types.NewError(types.ErrLimitedConnectivity, "node datapath is degraded", fmt.Sprint(resp.GetReasons()))
		default:
			return types.NewError(types.ErrPluginNotAvailable, "node datapath is not ready", fmt.Sprint(resp.GetReasons()))
		}
	})
}

// cniError maps a datapath gRPC error to a CNI error code. notFoundIsUnknown
// makes NotFound mean "container unknown" (CHECK); elsewhere it names a
// missing configuration object such as an IPAM pool.
func cniError(op string, err error, notFoundIsUnknown bool) error {
	st, _ := status.FromError(err)
	msg := fmt.Sprintf("%s: %s", op, st.Message())
	var code uint
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		code = types.ErrTryAgainLater
		msg = fmt.Sprintf("%s: axon-datapath unavailable, try again later", op)
	case codes.InvalidArgument:
		code = types.ErrInvalidNetworkConfig
	case codes.NotFound:
		code = types.ErrInvalidNetworkConfig
		if notFoundIsUnknown {
			code = types.ErrUnknownContainer
		}
	case codes.ResourceExhausted:
		// Only IPAM's mark means an exhausted pool: gRPC gives the same
		// code for an oversized message, the datapath for a full map.
		code = types.ErrInternal
		if poolExhausted(st) {
			code = ErrAddressExhausted
		}
	case codes.FailedPrecondition, codes.AlreadyExists:
		code = ErrPrecondition
	default:
		code = types.ErrInternal
	}
	return types.NewError(code, msg, err.Error())
}

// The google.rpc.ErrorInfo IPAM attaches to RESOURCE_EXHAUSTED for a pool
// with no free address, and the datapath passes on (the IPAM contract,
// proto/axon/ipam/v1alpha1).
const (
	ipamErrorDomain     = "ipam.axon-cni.io"
	reasonPoolExhausted = "POOL_EXHAUSTED"
)

// poolExhausted reports whether st carries IPAM's exhausted-pool mark.
func poolExhausted(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ipamErrorDomain && info.GetReason() == reasonPoolExhausted {
			return true
		}
	}
	return false
}

// toResult turns a datapath endpoint into a CNI result.
func toResult(ep *datapathv1alpha1.Endpoint) (*current.Result, error) {
	if ep == nil {
		return nil, errors.New("no endpoint")
	}
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, in := range ep.GetInterfaces() {
		mtu := int(in.GetMtu())
		r.Interfaces = append(r.Interfaces, &current.Interface{Name: in.GetName(), Mac: in.GetMac(), Sandbox: in.GetSandbox(), Mtu: mtu})
	}
	for _, ipc := range ep.GetIps() {
		ip, ipNet, err := net.ParseCIDR(ipc.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", ipc.GetAddress(), err)
		}
		ipNet.IP = ip
		cfg := &current.IPConfig{Address: *ipNet}
		if g := ipc.GetGateway(); g != "" {
			if cfg.Gateway = net.ParseIP(g); cfg.Gateway == nil {
				return nil, fmt.Errorf("gateway %q is not an address", g)
			}
		}
		if idx := int(ipc.GetInterfaceIndex()); idx < len(r.Interfaces) {
			cfg.Interface = current.Int(idx)
		} else {
			return nil, fmt.Errorf("address %q names interface %d of %d", ipc.GetAddress(), idx, len(r.Interfaces))
		}
		r.IPs = append(r.IPs, cfg)
	}
	for _, rt := range ep.GetRoutes() {
		_, dst, err := net.ParseCIDR(rt.GetDestination())
		if err != nil {
			return nil, fmt.Errorf("route destination %q: %w", rt.GetDestination(), err)
		}
		route := &types.Route{Dst: *dst}
		if g := rt.GetGateway(); g != "" {
			if route.GW = net.ParseIP(g); route.GW == nil {
				return nil, fmt.Errorf("route gateway %q is not an address", g)
			}
		}
		r.Routes = append(r.Routes, route)
	}
	return r, nil
}

// checkNetns reports a CNI_NETNS that does not exist or is no network
// namespace (a bind mount or /proc path of one is on nsfs) as error 8.
func checkNetns(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return types.NewError(types.ErrInvalidNetNS, "network namespace not found", err.Error())
	}
	if st.Type != unix.NSFS_MAGIC {
		return types.NewError(types.ErrInvalidNetNS, "not a network namespace", path+" is not a namespace handle (nsfs)")
	}
	return nil
}

// portMappings converts the "portMappings" capability for the datapath,
// which checks the ports and addresses.
func portMappings(in []config.PortMapping) ([]*datapathv1alpha1.PortMapping, error) {
	var out []*datapathv1alpha1.PortMapping
	for i, pm := range in {
		var proto commonv1alpha1.Protocol
		switch strings.ToLower(pm.Protocol) {
		case "", "tcp":
			proto = commonv1alpha1.Protocol_PROTOCOL_TCP
		case "udp":
			proto = commonv1alpha1.Protocol_PROTOCOL_UDP
		default:
			return nil, fmt.Errorf("runtimeConfig.portMappings[%d]: protocol %q, want tcp or udp", i, pm.Protocol)
		}
		if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, fmt.Errorf("runtimeConfig.portMappings[%d]: ports %d:%d not in 1..65535", i, pm.HostPort, pm.ContainerPort)
		}
		out = append(out, &datapathv1alpha1.PortMapping{
			HostPort: uint32(pm.HostPort), ContainerPort: uint32(pm.ContainerPort), Protocol: proto, HostIp: pm.HostIP,
		})
	}
	return out, nil
}
