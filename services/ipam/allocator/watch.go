package allocator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// WatchBlocks sends every block matching f as ADDED, then SYNCED, then every
// change: ADDED on claim, DELETED on release, MODIFIED when the owner
// node's addresses change. After etcd compaction it re-lists (ADDED for
// every block, then SYNCED). It returns when ctx ends or send fails.
func (a *Allocator) WatchBlocks(ctx context.Context, f BlockFilter, send func(*ipamv1alpha1.WatchBlocksResponse) error) error {
	w := &blockWatch{a: a, f: f, send: send}
	for {
		rev, err := w.list(ctx)
		if err != nil {
			return err
		}
		err = w.follow(ctx, rev)
		if errors.Is(err, errRelist) {
			continue
		}
		return err
	}
}

var errRelist = errors.New("watch lost its place; re-list")

type blockWatch struct {
	a      *Allocator
	f      BlockFilter
	send   func(*ipamv1alpha1.WatchBlocksResponse) error
	blocks map[string]*blockRecord
	nodes  map[string][]string // node name -> addresses
}

func (w *blockWatch) match(b *blockRecord) bool {
	return (w.f.Node == "" || b.Node == w.f.Node) && (w.f.Pool == "" || b.Pool == w.f.Pool) &&
		(w.f.Family == 0 || pool.FamilyOf(b.CIDR.Addr()) == w.f.Family)
}

func (w *blockWatch) event(t commonv1alpha1.EventType, b *blockRecord, rev int64) error {
	bp := toBlockProto(blockRef{b, rev}, 0, 0, nil)
	// Usage counts are not tracked by the watch; they are read with
	// ListBlocks. Clear the router adjustment made for counted blocks.
	bp.Allocated, bp.Capacity = 0, 0
	return w.send(&ipamv1alpha1.WatchBlocksResponse{Type: t, Block: bp, NodeAddresses: w.nodes[b.Node]})
}

// list sends the current state and returns its revision.
func (w *blockWatch) list(ctx context.Context) (int64, error) {
	resp, err := w.a.store.Txn(ctx).Then(
		clientv3.OpGet(w.a.keys.blocks(), clientv3.WithPrefix()),
		clientv3.OpGet(w.a.keys.nodes(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, fmt.Errorf("list blocks: %w: %w", ErrUnavailable, err)
	}
	w.blocks, w.nodes = map[string]*blockRecord{}, map[string][]string{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if n, err := decodeNode(string(kv.Key), kv.Value); err == nil {
			w.nodes[n.GetName()] = n.GetAddresses()
		}
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		b, err := decodeBlock(string(kv.Key), kv.Value)
		if err != nil || !w.match(b) {
			continue
		}
		w.blocks[string(kv.Key)] = b
		if err := w.event(commonv1alpha1.EventType_EVENT_TYPE_ADDED, b, kv.ModRevision); err != nil {
			return 0, err
		}
	}
	if err := w.send(&ipamv1alpha1.WatchBlocksResponse{Type: commonv1alpha1.EventType_EVENT_TYPE_SYNCED}); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// follow streams changes after rev until an error; errRelist means the
// watch lost its place.
func (w *blockWatch) follow(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// One watch over nodes and blocks keeps their events in commit order.
	wch := w.a.cli.Watch(ctx, w.a.keys.topology(), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) || !resp.Canceled {
				return errRelist
			}
			return fmt.Errorf("watch blocks: %w: %w", ErrUnavailable, err)
		}
		for _, ev := range resp.Events {
			var err error
			if strings.HasPrefix(string(ev.Kv.Key), w.a.keys.nodes()) {
				err = w.nodeEvent(ev)
			} else {
				err = w.blockEvent(ev)
			}
			if err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errRelist
}

func (w *blockWatch) blockEvent(ev *clientv3.Event) error {
	key := string(ev.Kv.Key)
	if ev.Type == mvccpb.DELETE {
		b, known := w.blocks[key]
		if !known {
			return nil
		}
		delete(w.blocks, key)
		return w.event(commonv1alpha1.EventType_EVENT_TYPE_DELETED, b, ev.Kv.ModRevision)
	}
	b, err := decodeBlock(key, ev.Kv.Value)
	if err != nil || !w.match(b) {
		return nil
	}
	t := commonv1alpha1.EventType_EVENT_TYPE_ADDED
	if _, known := w.blocks[key]; known {
		t = commonv1alpha1.EventType_EVENT_TYPE_MODIFIED
	}
	w.blocks[key] = b
	return w.event(t, b, ev.Kv.ModRevision)
}

func (w *blockWatch) nodeEvent(ev *clientv3.Event) error {
	if ev.Type == mvccpb.DELETE {
		return nil // its blocks' DELETED events follow
	}
	n, err := decodeNode(string(ev.Kv.Key), ev.Kv.Value)
	if err != nil {
		return nil
	}
	if slices.Equal(w.nodes[n.GetName()], n.GetAddresses()) {
		w.nodes[n.GetName()] = n.GetAddresses()
		return nil
	}
	w.nodes[n.GetName()] = n.GetAddresses()
	for _, key := range sortedKeys(w.blocks) {
		if b := w.blocks[key]; b.Node == n.GetName() {
			if err := w.event(commonv1alpha1.EventType_EVENT_TYPE_MODIFIED, b, ev.Kv.ModRevision); err != nil {
				return err
			}
		}
	}
	return nil
}
