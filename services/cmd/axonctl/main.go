// Command axonctl is the command-line client of the Axon services.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "axonctl:", err)
		stop()
		os.Exit(1)
	}
}

// endpoints are the gRPC targets of the services axonctl talks to.
type endpoints struct {
	ipam, lbipam, policy, operator string
	datapaths                      []string
	timeout                        time.Duration
	transport                      transport
}

func newRootCmd() *cobra.Command {
	var ep endpoints
	root := &cobra.Command{
		Use:           "axonctl",
		Short:         "Inspect and drive the Axon services",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyLocal(cmd, &ep)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&ep.ipam, "ipam", "127.0.0.1:9401", "gRPC target of axon-ipam; empty: not checked")
	f.StringSliceVar(&ep.datapaths, "datapath", []string{"unix:///run/axon/datapath.sock"}, "gRPC targets of axon-datapath (host:port or unix:///path); repeat for several nodes; empty: not checked")
	f.StringVar(&ep.lbipam, "lbipam", "127.0.0.1:9403", "gRPC target of axon-lbipam; empty: not checked")
	f.StringVar(&ep.policy, "policy", "127.0.0.1:9404", "gRPC target of axon-policy; empty: not checked")
	f.StringVar(&ep.operator, "operator", "127.0.0.1:9405", "gRPC target of axon-operator; empty: not checked")
	f.DurationVar(&ep.timeout, "timeout", 3*time.Second, "per-call timeout")
	registerTransportFlags(root, &ep)
	root.AddCommand(newStatusCmd(&ep), newServiceCmd(&ep))
	return root
}

func newStatusCmd(ep *endpoints) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the health of every service; fails unless all are SERVING",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return status(cmd.Context(), cmd.OutOrStdout(), ep)
		},
	}
}

func status(ctx context.Context, out io.Writer, ep *endpoints) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTARGET\tSTATUS")
	unhealthy := 0
	targets := []struct{ name, target string }{{"ipam", ep.ipam}, {"lbipam", ep.lbipam}, {"policy", ep.policy}, {"operator", ep.operator}}
	for _, d := range ep.datapaths {
		targets = append(targets, struct{ name, target string }{"datapath", d})
	}
	for _, s := range targets {
		if s.target == "" {
			continue // --ipam= and the like: not checked (a node's probe checks its datapath alone)
		}
		st := checkHealth(ctx, ep, s.target)
		if st != healthpb.HealthCheckResponse_SERVING.String() {
			unhealthy++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.name, s.target, st)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if unhealthy > 0 {
		return fmt.Errorf("%d service(s) not serving", unhealthy)
	}
	return nil
}

// checkHealth returns the serving status of target, or why it has none.
func checkHealth(ctx context.Context, ep *endpoints, target string) string {
	conn, err := ep.dial(target)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, ep.timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return "UNREACHABLE"
	}
	return resp.GetStatus().String()
}
