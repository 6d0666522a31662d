// Package nodes keeps IPAM's node registry in line with the cluster's
// Kubernetes Nodes: a Node is registered with IPAM with its InternalIPs and
// its spec.podCIDRs (which a host-scope pool turns into the node's block),
// kept up to date as it changes, and deleted from IPAM, releasing its
// blocks and addresses, when it leaves the cluster.
//
// The controller is level-triggered: informer events only name a node, and
// a worker compares the Node the informer holds with what IPAM has and
// writes the difference, conditional on the revision it read. A failure is
// retried with exponential backoff. At start, after the informer's initial
// list, nodes IPAM knows and Kubernetes does not are deleted from IPAM, so
// deletions missed while no operator ran are caught up.
package nodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// ErrNotSynced is returned by [Controller.Ready] until the controller has
// listed every Node and caught up with IPAM.
var ErrNotSynced = errors.New("nodes not synced with IPAM yet")

// Log attribute keys.
const (
	logKeyNode  = "node"
	logKeyError = "err"
)

// Config tunes a [Controller]. The zero value of a field means its default.
type Config struct {
	// Workers is how many nodes are reconciled at once (default 2).
	Workers int
	// RetryBase and RetryMax bound the exponential backoff of a node whose
	// reconcile failed (defaults 100 ms and 2 min).
	RetryBase, RetryMax time.Duration
	// ListPageSize is the page size of the IPAM node list read at start
	// (default 500).
	ListPageSize int32
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 2 * time.Minute
	}
	if c.ListPageSize <= 0 {
		c.ListPageSize = 500
	}
	return c
}

// Controller registers Kubernetes Nodes with IPAM. Create it with [New]
// before the informer factory starts, then call [Controller.Run].
type Controller struct {
	cfg      Config
	kube     kubernetes.Interface
	lister   corelisters.NodeLister
	synced   cache.InformerSynced
	ipam     ipamv1alpha1.IPAMServiceClient
	queue    workqueue.TypedRateLimitingInterface[string]
	metrics  *Metrics
	log      *slog.Logger
	caughtUp atomic.Bool
}

// New returns a controller fed by informer (whose factory the caller
// starts), writing to ipam. kube is used for the live reads that guard a
// deletion at start. metrics may be nil.
func New(kube kubernetes.Interface, informer coreinformers.NodeInformer, ipam ipamv1alpha1.IPAMServiceClient, cfg Config, metrics *Metrics, log *slog.Logger) (*Controller, error) {
	cfg = cfg.withDefaults()
	c := &Controller{
		cfg:    cfg,
		kube:   kube,
		lister: informer.Lister(),
		synced: informer.Informer().HasSynced,
		ipam:   ipam,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryBase, cfg.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodes"}),
		metrics: metrics,
		log:     log,
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	return c, nil
}

// enqueue queues the name of a Node, or of a deleted Node's tombstone.
func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.log.Error("cannot name a node event", logKeyError, err)
		return
	}
	c.queue.Add(key)
}

// Run waits for the informer's initial list, deletes from IPAM the nodes
// Kubernetes no longer has, and reconciles queued nodes until ctx is done.
// Failures are retried, never fatal: the controller stays unready
// ([Controller.Ready]) until it has caught up.
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return // ctx ended
	}
	done := make(chan struct{})
	for range c.cfg.Workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.processNext(ctx) {
			}
		}()
	}
	// Until the orphans are found the workers already register nodes; the
	// controller is ready once both are done.
	for wait := c.cfg.RetryBase; ctx.Err() == nil; wait = min(2*wait, c.cfg.RetryMax) {
		err := c.queueOrphans(ctx)
		if err == nil {
			break
		}
		c.log.Warn("look for nodes deleted while no operator ran, will retry", "retry_in", wait, logKeyError, err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	for range c.cfg.Workers {
		<-done
	}
}

// Ready reports [ErrNotSynced] until the informer has listed every Node
// and the nodes IPAM had beyond them were queued for deletion.
func (c *Controller) Ready() error {
	if !c.synced() || !c.caughtUp.Load() {
		return ErrNotSynced
	}
	return nil
}

// queueOrphans queues every node IPAM has and the informer does not, once
// a live read confirms that the Node is gone (the informer may lag behind
// a Node created since its list). The workers then delete them.
func (c *Controller) queueOrphans(ctx context.Context) error {
	req := &ipamv1alpha1.ListNodesRequest{PageSize: c.cfg.ListPageSize}
	for {
		resp, err := c.ipam.ListNodes(ctx, req)
		if err != nil {
			return fmt.Errorf("list IPAM nodes: %w", err)
		}
		for _, n := range resp.GetNodes() {
			name := n.GetName()
			if _, err := c.lister.Get(name); err == nil {
				continue
			}
			_, err := c.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				c.log.Info("node left the cluster while no operator ran", logKeyNode, name)
				c.queue.Add(name)
			case err != nil:
				return fmt.Errorf("read node %q: %w", name, err)
			}
		}
		if resp.GetNextPageToken() == "" {
			c.caughtUp.Store(true)
			return nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// processNext reconciles one queued node; false once the queue shut down.
func (c *Controller) processNext(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	op, err := c.reconcile(ctx, name)
	c.metrics.observe(op, err)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		c.log.Warn("reconcile node with IPAM, will retry", logKeyNode, name,
			"attempt", c.queue.NumRequeues(name)+1, logKeyError, err)
		c.queue.AddRateLimited(name)
		return true
	}
	c.queue.Forget(name)
	return true
}

// Operations the controller does on a node, for its logs and metrics.
const (
	opRegister = "register"
	opDelete   = "delete"
)

// reconcile brings IPAM's record of node name in line with the Node the
// informer holds, or deletes it when there is none.
func (c *Controller) reconcile(ctx context.Context, name string) (op string, err error) {
	node, err := c.lister.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return opDelete, c.delete(ctx, name)
	case err != nil:
		return opRegister, fmt.Errorf("read node %q from the informer: %w", name, err)
	}
	return opRegister, c.register(ctx, node)
}

// maxConflicts bounds the re-reads of one reconcile after another writer
// (a node's datapath records its addresses too) changed the node between
// the read and the conditional write.
const maxConflicts = 5

// register creates or updates the node in IPAM. The write is conditional on
// the revision read, and is skipped when IPAM already has the spec.
func (c *Controller) register(ctx context.Context, node *corev1.Node) error {
	want, err := spec(node)
	if err != nil {
		return err
	}
	for range maxConflicts {
		got, err := c.ipam.GetNode(ctx, &ipamv1alpha1.GetNodeRequest{Name: node.Name})
		req := &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{
			Name: node.Name, Addresses: want.GetAddresses(), PodCidrs: want.GetPodCidrs(),
		}}
		switch status.Code(err) {
		case codes.OK:
			cur := got.GetNode()
			if len(req.Node.Addresses) == 0 {
				// The kubelet has not reported addresses yet: keep those the
				// node's datapath may have recorded.
				req.Node.Addresses = cur.GetAddresses()
			}
			if slices.Equal(cur.GetAddresses(), req.Node.Addresses) && slices.Equal(cur.GetPodCidrs(), req.Node.PodCidrs) {
				return nil
			}
			req.ExpectedRevision = cur.GetRevision()
		case codes.NotFound:
			req.AllowMissing = true
		default:
			return fmt.Errorf("read node %q from IPAM: %w", node.Name, err)
		}
		resp, err := c.ipam.UpdateNode(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			n := resp.GetNode()
			c.log.Info("node registered with IPAM", logKeyNode, n.GetName(), "addresses", n.GetAddresses(),
				"pod_cidrs", n.GetPodCidrs(), "router_ips", n.GetStatus().GetRouterIps())
			return nil
		case codes.Aborted, codes.AlreadyExists:
			continue // changed or created since the read: read again
		default:
			return fmt.Errorf("register node %q with IPAM: %w", node.Name, err)
		}
	}
	return fmt.Errorf("register node %q with IPAM: changed by others %d times in a row", node.Name, maxConflicts)
}

// spec is IPAM's view of node: its InternalIPs in the kubelet's order
// (preferred first within each family) and its pod CIDRs, both in
// canonical form. IPAM makes the pod CIDRs blocks of the host-scope pool
// that accepts them, and only records them when no such pool exists.
func spec(node *corev1.Node) (*ipamv1alpha1.Node, error) {
	n := &ipamv1alpha1.Node{Name: node.Name}
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			return nil, fmt.Errorf("node %q: InternalIP %q: %w", node.Name, a.Address, err)
		}
		if s := ip.Unmap().String(); !slices.Contains(n.Addresses, s) {
			n.Addresses = append(n.Addresses, s)
		}
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("node %q: pod CIDR %q: %w", node.Name, s, err)
		}
		n.PodCidrs = append(n.PodCidrs, p.Masked().String())
	}
	return n, nil
}

// delete removes the node from IPAM, releasing its addresses and blocks.
// Deleting a node IPAM does not have succeeds.
func (c *Controller) delete(ctx context.Context, name string) error {
	resp, err := c.ipam.DeleteNode(ctx, &ipamv1alpha1.DeleteNodeRequest{Name: name})
	if err != nil {
		return fmt.Errorf("delete node %q from IPAM: %w", name, err)
	}
	if len(resp.GetReleasedAllocations()) > 0 || len(resp.GetReleasedBlocks()) > 0 {
		c.log.Info("node deleted from IPAM", logKeyNode, name,
			"released_allocations", len(resp.GetReleasedAllocations()), "released_blocks", resp.GetReleasedBlocks())
	}
	return nil
}
