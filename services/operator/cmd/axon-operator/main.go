// Command axon-operator watches the Kubernetes API and drives the Axon
// services from it. It serves gRPC health and metrics; it has no API of its
// own.
//
// For now it keeps IPAM's nodes in line with the cluster's Nodes (package
// nodes). Health is SERVING while the apiserver and IPAM answer and the
// Nodes are synced with IPAM. Outside a pod and without --kubeconfig there
// is no Kubernetes API to watch: it then reports NOT_SERVING and says why.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/operator/nodes"
)

// ErrNoKubernetes is the health failure of an operator that has no
// Kubernetes API to watch.
var ErrNoKubernetes = errors.New("no Kubernetes API: not running in a pod and no --kubeconfig given")

func main() {
	os.Exit(daemon.Main(spec()))
}

// options are the operator's own flags.
type options struct {
	kubeconfig  string
	ipamTarget  string
	ipamTLS     daemon.ClientTLS
	resync      time.Duration
	nodeWorkers int
	kubeQPS     float64
	kubeBurst   int
}

// spec describes the service to the daemon bootstrap.
func spec() daemon.Spec {
	o := options{
		ipamTarget:  "127.0.0.1:9401",
		ipamTLS:     daemon.ClientTLS{Peer: "ipam"},
		resync:      10 * time.Minute,
		nodeWorkers: 2,
		kubeQPS:     20,
		kubeBurst:   40,
	}
	return daemon.Spec{
		Name:     "operator",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9405", MetricsAddr: "127.0.0.1:9605"},
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig `file` of the cluster; empty: the pod's service account (in-cluster)")
			fs.Float64Var(&o.kubeQPS, "kube-api-qps", o.kubeQPS, "sustained `rate` of requests to the Kubernetes API (per second)")
			fs.IntVar(&o.kubeBurst, "kube-api-burst", o.kubeBurst, "burst of requests to the Kubernetes API above --kube-api-qps")
			fs.DurationVar(&o.resync, "resync-period", o.resync, "how often every watched object is reconciled again, even unchanged")
			fs.StringVar(&o.ipamTarget, "ipam-target", o.ipamTarget, "gRPC `target` of axon-ipam (host:port or unix:///path)")
			o.ipamTLS.RegisterFlags(fs)
			fs.IntVar(&o.nodeWorkers, "node-workers", o.nodeWorkers, "how many nodes are reconciled with IPAM at once")
		},
		Setup: func(ctx context.Context, d *daemon.Daemon) error { return setup(ctx, d, o) },
	}
}

// setup connects to the Kubernetes API and IPAM and starts the node
// controller; everything stops in the daemon's shutdown hooks.
func setup(ctx context.Context, d *daemon.Daemon, o options) error {
	log := d.Logger()
	// client-go logs through klog; its lines join the service's log.
	klog.SetSlogLogger(log.With(daemon.LogKeySubsys, "client-go"))
	kcfg, err := kubeConfig(o)
	if errors.Is(err, ErrNoKubernetes) {
		log.Warn("nothing to do", daemon.LogKeyError, err)
		d.AddCheck("kubernetes", func(context.Context) error { return err })
		return nil
	}
	if err != nil {
		return err
	}
	kcfg.QPS, kcfg.Burst = float32(o.kubeQPS), o.kubeBurst
	kcfg.UserAgent = "axon-operator"
	kube, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return &daemon.UsageError{Err: fmt.Errorf("kubernetes client: %w", err)}
	}
	creds, err := o.ipamTLS.Credentials(o.ipamTarget)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(o.ipamTarget, grpc.WithTransportCredentials(creds))
	if err != nil {
		return &daemon.UsageError{Err: fmt.Errorf("--ipam-target: %w", err)}
	}
	d.OnShutdown(conn.Close)
	ipam := ipamv1alpha1.NewIPAMServiceClient(conn)

	factory := informers.NewSharedInformerFactory(kube, o.resync)
	ctrl, err := nodes.New(kube, factory.Core().V1().Nodes(), ipam,
		nodes.Config{Workers: o.nodeWorkers}, nodes.NewMetrics(d.Registry()),
		log.With(daemon.LogKeySubsys, "nodes"))
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctrl.Run(runCtx)
	}()
	factory.Start(runCtx.Done())
	d.OnShutdown(func() error {
		cancel()
		<-done
		factory.Shutdown()
		return nil
	})

	d.AddCheck("kubernetes", func(ctx context.Context) error {
		if err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
			return fmt.Errorf("kubernetes API %s: %w", kcfg.Host, err)
		}
		return nil
	})
	d.AddCheck("ipam", func(ctx context.Context) error {
		// A one-node page: IPAM answers only while its etcd does.
		if _, err := ipam.ListNodes(ctx, &ipamv1alpha1.ListNodesRequest{PageSize: 1}); err != nil {
			return fmt.Errorf("axon-ipam %s: %w", o.ipamTarget, err)
		}
		return nil
	})
	d.AddCheck("nodes", func(context.Context) error { return ctrl.Ready() })
	log.Info("watching the Kubernetes API", "host", kcfg.Host, "ipam", o.ipamTarget)
	return nil
}

// kubeConfig returns the client configuration of --kubeconfig, else the
// in-cluster one, else [ErrNoKubernetes].
func kubeConfig(o options) (*rest.Config, error) {
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, &daemon.UsageError{Err: fmt.Errorf("--kubeconfig: %w", err)}
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, ErrNoKubernetes
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
	}
	return cfg, nil
}
