package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// entry is one cached key with its decoded value.
type entry[T any] struct {
	val    T
	modRev int64
}

// watchCache mirrors every key under a prefix, kept current by an etcd
// watch. It is only a fast path: writes still compare the mod revision they
// read here, so a stale entry makes a transaction fail, never succeed wrongly.
// A miss may be stale too; callers that must not act on a stale miss call
// refresh.
type watchCache[T any] struct {
	cli    *clientv3.Client // for the watch
	store  *store           // for reads
	prefix string
	decode func(key string, value []byte) (T, error)
	log    *slog.Logger

	// indexOf, if set, groups the keys (for blocks: by node) so lookups of
	// one group do not scan the whole cache.
	indexOf func(T) string

	mu      sync.RWMutex
	items   map[string]entry[T]
	byIndex map[string]map[string]struct{}
	rev     int64
}

func newWatchCache[T any](cli *clientv3.Client, st *store, prefix string, log *slog.Logger, decode func(string, []byte) (T, error)) *watchCache[T] {
	return &watchCache[T]{cli: cli, store: st, prefix: prefix, decode: decode, log: log, items: map[string]entry[T]{}, byIndex: map[string]map[string]struct{}{}}
}

// setLocked stores e under key, keeping the index. Caller holds mu.
func (c *watchCache[T]) setLocked(key string, e entry[T]) {
	c.deleteLocked(key)
	c.items[key] = e
	if c.indexOf != nil {
		idx := c.indexOf(e.val)
		if c.byIndex[idx] == nil {
			c.byIndex[idx] = map[string]struct{}{}
		}
		c.byIndex[idx][key] = struct{}{}
	}
}

// deleteLocked drops key, keeping the index. Caller holds mu.
func (c *watchCache[T]) deleteLocked(key string) {
	old, ok := c.items[key]
	if !ok {
		return
	}
	delete(c.items, key)
	if c.indexOf != nil {
		idx := c.indexOf(old.val)
		delete(c.byIndex[idx], key)
		if len(c.byIndex[idx]) == 0 {
			delete(c.byIndex, idx)
		}
	}
}

// group returns the entries of one index value (see indexOf).
func (c *watchCache[T]) group(idx string) map[string]entry[T] {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]entry[T], len(c.byIndex[idx]))
	for k := range c.byIndex[idx] {
		out[k] = c.items[k]
	}
	return out
}

// refresh re-lists the prefix and replaces the cache if the listing is newer.
func (c *watchCache[T]) refresh(ctx context.Context) error {
	resp, err := c.store.Get(ctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list %s: %w: %w", c.prefix, ErrUnavailable, err)
	}
	items := make(map[string]entry[T], len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := c.decode(string(kv.Key), kv.Value)
		if err != nil {
			c.log.Error("skipping undecodable key", "key", string(kv.Key), "err", err)
			continue
		}
		items[string(kv.Key)] = entry[T]{val: v, modRev: kv.ModRevision}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if resp.Header.Revision > c.rev {
		c.items, c.byIndex, c.rev = map[string]entry[T]{}, map[string]map[string]struct{}{}, resp.Header.Revision
		for k, e := range items {
			c.setLocked(k, e)
		}
	}
	return nil
}

// run keeps the cache current until ctx is done, re-listing after the watch
// loses its place (compaction) or breaks.
func (c *watchCache[T]) run(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.RLock()
		rev := c.rev
		c.mu.RUnlock()
		wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), c.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if err := resp.Err(); err != nil {
				if !errors.Is(err, rpctypes.ErrCompacted) {
					c.log.Warn("watch broken; re-listing", "prefix", c.prefix, "err", err)
				}
				break
			}
			c.apply(resp.Events, resp.Header.Revision)
		}
		if ctx.Err() != nil {
			return
		}
		for ctx.Err() == nil {
			if err := c.refresh(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (c *watchCache[T]) apply(events []*clientv3.Event, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range events {
		if ev.Kv.ModRevision <= c.rev {
			continue // already reflected by a newer refresh
		}
		key := string(ev.Kv.Key)
		if ev.Type == mvccpb.DELETE {
			c.deleteLocked(key)
			continue
		}
		v, err := c.decode(key, ev.Kv.Value)
		if err != nil {
			c.log.Error("skipping undecodable key", "key", key, "err", err)
			continue
		}
		c.setLocked(key, entry[T]{val: v, modRev: ev.Kv.ModRevision})
	}
	if rev > c.rev {
		c.rev = rev
	}
}

// put records a write of our own, so the next read sees it even before the
// watch delivers it.
func (c *watchCache[T]) put(key string, v T, modRev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if modRev <= c.rev {
		return // the watch or a re-list already reflects this or a later state
	}
	if cur, ok := c.items[key]; !ok || cur.modRev < modRev {
		c.setLocked(key, entry[T]{val: v, modRev: modRev})
	}
}

// remove records a delete of our own.
func (c *watchCache[T]) remove(key string, modRev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.items[key]; ok && cur.modRev < modRev {
		c.deleteLocked(key)
	}
}

func (c *watchCache[T]) get(key string) (entry[T], bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.items[key]
	return e, ok
}

// snapshot returns every entry whose value passes keep.
func (c *watchCache[T]) snapshot(keep func(T) bool) map[string]entry[T] {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string]entry[T]{}
	for k, e := range c.items {
		if keep == nil || keep(e.val) {
			out[k] = e
		}
	}
	return out
}

// reload re-reads one key and records what it holds now.
func (c *watchCache[T]) reload(ctx context.Context, key string) error {
	resp, err := c.store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w: %w", key, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		c.remove(key, resp.Header.Revision)
		return nil
	}
	v, err := c.decode(key, resp.Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.items[key]; !ok || cur.modRev < resp.Kvs[0].ModRevision {
		c.setLocked(key, entry[T]{val: v, modRev: resp.Kvs[0].ModRevision})
	}
	return nil
}
