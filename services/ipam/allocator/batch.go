package allocator

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Allocations that arrive together are committed together: one etcd
// transaction carries the compares and puts of several, so a busy replica
// pays etcd's per-transaction cost (raft entry, apply, round trip) once per
// batch rather than once per allocation. A batch that fails (some compare
// no longer holds) is retried allocation by allocation, so one stale read
// never fails the others. etcd bounds a transaction's operations (128 by
// default); batches stay under that.
const (
	maxBatchJobs = 32
	maxBatchOps  = 100
)

var errClosed = errors.New("allocator closed")

// commitJob is one allocation's transaction, waiting to be committed.
type commitJob struct {
	// ctx is the caller's: a job whose caller gave up is never committed,
	// and a batch runs no longer than its most impatient caller waits.
	ctx     context.Context
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	elseOps []clientv3.Op
	keys    []string // keys the job writes; a batch writes each key once

	resp *clientv3.TxnResponse
	err  error
	done chan struct{}
}

// commitTxn commits one allocation transaction, batched with whatever
// other allocations are waiting.
func (a *Allocator) commitTxn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op, elseOps []clientv3.Op, keys []string) (*clientv3.TxnResponse, error) {
	j := &commitJob{ctx: ctx, cmps: cmps, ops: ops, elseOps: elseOps, keys: keys, done: make(chan struct{})}
	select {
	case a.commits <- j:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.closed:
		return nil, errClosed
	}
	select {
	case <-j.done:
		return j.resp, j.err
	case <-ctx.Done():
		// The job may still commit; the caller's retry finds the handle.
		return nil, ctx.Err()
	case <-a.closed:
		return nil, errClosed
	}
}

// runBatcher commits queued jobs until ctx ends.
func (a *Allocator) runBatcher(ctx context.Context) {
	var carry []*commitJob
	for {
		var first *commitJob
		if len(carry) > 0 {
			first, carry = carry[0], carry[1:]
		} else {
			select {
			case <-ctx.Done():
				return
			case first = <-a.commits:
			}
		}
		batch := []*commitJob{first}
		written := map[string]bool{}
		for _, k := range first.keys {
			written[k] = true
		}
		nCmps, nOps := len(first.cmps), len(first.ops)
	collect:
		for len(batch) < maxBatchJobs {
			var j *commitJob
			if len(carry) > 0 {
				j, carry = carry[0], carry[1:]
			} else {
				select {
				case j = <-a.commits:
				default:
					break collect
				}
			}
			clash := nCmps+len(j.cmps) > maxBatchOps || nOps+len(j.ops) > maxBatchOps
			for _, k := range j.keys {
				clash = clash || written[k]
			}
			if clash {
				carry = append(carry, j)
				break
			}
			for _, k := range j.keys {
				written[k] = true
			}
			nCmps, nOps = nCmps+len(j.cmps), nOps+len(j.ops)
			batch = append(batch, j)
		}
		a.commitBatch(batch)
	}
}

// commitBatch commits jobs in one transaction, or each on its own when
// there is one or the joint compares fail. Jobs whose callers stopped
// waiting are dropped, never committed: a late commit could bring back an
// allocation its owner has since released.
func (a *Allocator) commitBatch(all []*commitJob) {
	var jobs []*commitJob
	for _, j := range all {
		if err := j.ctx.Err(); err != nil {
			j.err = err
			close(j.done)
			continue
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return
	}
	// The batch may take only as long as its most impatient caller waits.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, j := range jobs {
		if d, ok := j.ctx.Deadline(); ok {
			var c context.CancelFunc
			ctx, c = context.WithDeadline(ctx, d)
			defer c()
		}
	}
	if len(jobs) > 1 {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, j := range jobs {
			cmps = append(cmps, j.cmps...)
			ops = append(ops, j.ops...)
		}
		resp, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err == nil && resp.Succeeded {
			for _, j := range jobs {
				j.resp = resp
				close(j.done)
			}
			return
		}
	}
	for _, j := range jobs {
		if j.resp, j.err = nil, j.ctx.Err(); j.err == nil {
			j.resp, j.err = a.cli.Txn(j.ctx).If(j.cmps...).Then(j.ops...).Else(j.elseOps...).Commit()
		}
		close(j.done)
	}
}
