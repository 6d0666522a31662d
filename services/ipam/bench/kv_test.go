package bench

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// countingKV counts the etcd requests the allocator makes. It replaces the
// KV of the allocator's client (the same way etcd's namespace package wraps
// a client), so every Get and Txn of the allocator goes through it; watches
// do not.
type countingKV struct {
	clientv3.KV
	gets, txns, failedTxns, others atomic.Int64
}

// kvCounts is a snapshot of a countingKV.
type kvCounts struct {
	Gets, Txns, FailedTxns, Others int64
}

func (c kvCounts) sub(o kvCounts) kvCounts {
	return kvCounts{c.Gets - o.Gets, c.Txns - o.Txns, c.FailedTxns - o.FailedTxns, c.Others - o.Others}
}

// RoundTrips is every request to etcd.
func (c kvCounts) RoundTrips() int64 { return c.Gets + c.Txns + c.Others }

func (k *countingKV) snapshot() kvCounts {
	return kvCounts{k.gets.Load(), k.txns.Load(), k.failedTxns.Load(), k.others.Load()}
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

func (k *countingKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	k.others.Add(1)
	return k.KV.Put(ctx, key, val, opts...)
}

func (k *countingKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	k.others.Add(1)
	return k.KV.Delete(ctx, key, opts...)
}

func (k *countingKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	k.others.Add(1)
	return k.KV.Do(ctx, op)
}

func (k *countingKV) Txn(ctx context.Context) clientv3.Txn {
	return &countingTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type countingTxn struct {
	clientv3.Txn
	kv *countingKV
}

func (t *countingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *countingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *countingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *countingTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.txns.Add(1)
	resp, err := t.Txn.Commit()
	if err == nil && !resp.Succeeded {
		t.kv.failedTxns.Add(1)
	}
	return resp, err
}
