package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
)

// serviceListOptions are service list's flags.
type serviceListOptions struct {
	output, namespace, name string
}

func newServiceCmd(ep *endpoints) *cobra.Command {
	svc := &cobra.Command{Use: "service", Short: "Inspect the service load balancer of axon-datapath"}
	var opts serviceListOptions
	list := &cobra.Command{
		Use:   "list",
		Short: "List each datapath's service frontends and backends (as cilium service list)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serviceList(cmd.Context(), cmd.OutOrStdout(), ep, opts)
		},
	}
	f := list.Flags()
	f.StringVarP(&opts.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&opts.namespace, "namespace", "", "only services of this Kubernetes namespace")
	f.StringVar(&opts.name, "name", "", "only services of this Kubernetes Service name (needs --namespace)")
	svc.AddCommand(list)
	return svc
}

// nodeServices are one datapath's services.
type nodeServices struct {
	target   string
	services []*datapathv1alpha1.Service
}

func serviceList(ctx context.Context, out io.Writer, ep *endpoints, opts serviceListOptions) error {
	if opts.output != "table" && opts.output != "json" {
		return fmt.Errorf("--output must be table or json, got %q", opts.output)
	}
	var nodes []nodeServices
	for _, target := range ep.datapaths {
		svcs, err := listServices(ctx, target, ep, opts)
		if err != nil {
			return fmt.Errorf("datapath %s: %w", target, err)
		}
		nodes = append(nodes, nodeServices{target: target, services: svcs})
	}
	if opts.output == "json" {
		return writeServicesJSON(out, nodes)
	}
	return writeServicesTable(out, nodes)
}

// listServices pages through one datapath's services.
func listServices(ctx context.Context, target string, ep *endpoints, opts serviceListOptions) ([]*datapathv1alpha1.Service, error) {
	conn, err := ep.dial(target)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := datapathv1alpha1.NewDatapathServiceClient(conn)
	var svcs []*datapathv1alpha1.Service
	err = paging.All(func(token string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, ep.timeout)
		defer cancel()
		resp, err := client.ListServices(cctx, &datapathv1alpha1.ListServicesRequest{
			PageSize: 1000, PageToken: token, ServiceNamespace: opts.namespace, ServiceName: opts.name,
		})
		if err != nil {
			return "", err
		}
		svcs = append(svcs, resp.GetServices()...)
		return resp.GetNextPageToken(), nil
	})
	return svcs, err
}

// writeServicesTable writes one table per datapath (titled when there are
// several): ID, frontend, type, and a line per backend.
func writeServicesTable(out io.Writer, nodes []nodeServices) error {
	for i, n := range nodes {
		if len(nodes) > 1 {
			if i > 0 {
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "datapath %s:\n", n.target)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "ID\tFRONTEND\tSERVICE TYPE\tBACKEND")
		for _, s := range n.services {
			id := fmt.Sprint(s.GetId())
			if s.GetInternalId() != 0 {
				id += "," + fmt.Sprint(s.GetInternalId())
			}
			first := id + "\t" + frontendString(s.GetFrontend()) + "\t" + serviceType(s) + "\t"
			if len(s.GetBackends()) == 0 {
				fmt.Fprintln(tw, first+"(none)")
			}
			for j, b := range s.GetBackends() {
				if j > 0 {
					first = "\t\t\t"
				}
				fmt.Fprintf(tw, "%s%d => %s (%s)\n", first, j+1, backendString(s.GetFrontend(), b), backendState(b))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// writeServicesJSON writes [{"datapath": target, "services": [...]}, ...]
// with the contract's JSON names.
func writeServicesJSON(out io.Writer, nodes []nodeServices) error {
	type node struct {
		Datapath string            `json:"datapath"`
		Services []json.RawMessage `json:"services"`
	}
	doc := make([]node, 0, len(nodes))
	for _, n := range nodes {
		d := node{Datapath: n.target, Services: []json.RawMessage{}}
		for _, s := range n.services {
			b, err := protojson.Marshal(s)
			if err != nil {
				return err
			}
			d.Services = append(d.Services, b)
		}
		doc = append(doc, d)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func frontendString(fe *datapathv1alpha1.Frontend) string {
	return hostPort(fe.GetAddress(), fe.GetPort()) + "/" + strings.TrimPrefix(fe.GetProtocol().String(), "PROTOCOL_")
}

func backendString(fe *datapathv1alpha1.Frontend, b *datapathv1alpha1.Backend) string {
	s := hostPort(b.GetAddress(), b.GetPort()) + "/" + strings.TrimPrefix(fe.GetProtocol().String(), "PROTOCOL_")
	if b.GetWeight() > 1 {
		s += fmt.Sprintf(" weight %d", b.GetWeight())
	}
	return s
}

func hostPort(addr string, port uint32) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

// serviceType names the type as Kubernetes does, with a LOCAL policy
// ("NodePort/Local").
func serviceType(s *datapathv1alpha1.Service) string {
	t := map[datapathv1alpha1.ServiceType]string{
		datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP:    "ClusterIP",
		datapathv1alpha1.ServiceType_SERVICE_TYPE_NODE_PORT:     "NodePort",
		datapathv1alpha1.ServiceType_SERVICE_TYPE_LOAD_BALANCER: "LoadBalancer",
		datapathv1alpha1.ServiceType_SERVICE_TYPE_EXTERNAL_IP:   "ExternalIP",
	}[s.GetType()]
	if t == "" {
		t = s.GetType().String()
	}
	if s.GetTrafficPolicy() == datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL {
		t += "/Local"
	}
	return t
}

func backendState(b *datapathv1alpha1.Backend) string {
	if b.GetState() == datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING {
		return "terminating"
	}
	return "active"
}
