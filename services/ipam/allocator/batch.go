package allocator

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
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
	maxInflight  = 2
)

// commitJob is one allocation's transaction, waiting to be committed.
type commitJob struct {
	// ctx is the caller's: a job whose caller gave up is never committed,
	// and a batch runs no longer than its most impatient caller waits.
	ctx     context.Context
	cmps    []clientv3.Cmp
	cmpKeys []string // cmpKey of each of cmps
	ops     []clientv3.Op
	elseOps []clientv3.Op
	keys    []string // keys the job writes; a batch writes each key once

	resp *clientv3.TxnResponse
	err  error
	done chan struct{}
}

// batcher queues commit jobs. Up to maxInflight batches are committed at
// once, so etcd can put several into one raft entry batch and one fsync
// while more jobs queue up. A caller that finds fewer in flight commits
// the queue's next batch itself (a lone allocation never waits for another
// goroutine to be scheduled); if jobs are left after it, a goroutine
// drains the queue and then stops. A queue longer than one batch (a node's
// burst from AllocateIPs) takes a free slot at once.
type batcher struct {
	mu       sync.Mutex
	queue    []*commitJob
	inflight int
}

func newCommitJob(ctx context.Context, cmps []clientv3.Cmp, ops, elseOps []clientv3.Op, keys []string) *commitJob {
	j := &commitJob{ctx: ctx, cmps: cmps, ops: ops, elseOps: elseOps, keys: keys, done: make(chan struct{})}
	for _, c := range cmps {
		j.cmpKeys = append(j.cmpKeys, cmpKey(c))
	}
	return j
}

// wait returns the job's transaction response once it is committed, or
// the context's error when the caller stops waiting first.
func (j *commitJob) wait(ctx context.Context) (*clientv3.TxnResponse, error) {
	select {
	case <-j.done:
		return j.resp, j.err
	case <-ctx.Done():
		// The job may still commit; the caller's retry finds the handle.
		return nil, ctx.Err()
	}
}

// enqueue queues jobs for commit, batched with whatever other jobs are
// waiting; each job's wait returns its result. When fewer than maxInflight
// batches are being committed, the caller commits the next one itself (a
// lone allocation never waits for another goroutine to be scheduled).
func (a *Allocator) enqueue(jobs ...*commitJob) {
	if a.queue(jobs) && a.commitNext() {
		a.done.Go(a.drain)
	}
}

// queue adds jobs to the queue and reports whether the caller must start
// committing (a commit slot was free).
func (a *Allocator) queue(jobs []*commitJob) bool {
	if len(jobs) == 0 {
		return false
	}
	b := &a.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(b.queue, jobs...)
	if b.inflight < maxInflight {
		b.inflight++
		return true
	}
	return false
}

// drain commits batches until the queue is empty.
func (a *Allocator) drain() {
	for a.commitNext() {
	}
}

// commitNext commits the next batch of the queue and reports whether more
// jobs wait; when none do, its caller stops committing.
func (a *Allocator) commitNext() bool {
	b := &a.batch
	b.mu.Lock()
	batch, rest := nextBatch(b.queue)
	b.queue = rest
	// More than one batch waits: a free commit slot takes the next one
	// meanwhile.
	helper := len(rest) > 0 && b.inflight < maxInflight
	if helper {
		b.inflight++
	}
	b.mu.Unlock()
	if helper {
		a.done.Go(a.drain)
	}
	if len(batch) > 0 {
		a.commitBatch(batch)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inflight--
		return false
	}
	return true
}

// nextBatch splits the jobs that go into one transaction off queue: jobs
// in arrival order, up to maxBatchJobs and maxBatchOps (a compare that
// several jobs make counts once), stopping before a job that writes a key
// the batch already writes.
func nextBatch(queue []*commitJob) (batch, rest []*commitJob) {
	written := map[string]bool{}
	cmps := map[string]bool{}
	nOps := 0
	n := 0
	for _, j := range queue {
		newCmps := 0
		for _, k := range j.cmpKeys {
			if !cmps[k] {
				newCmps++
			}
		}
		if n == maxBatchJobs || (n > 0 && (len(cmps)+newCmps > maxBatchOps || nOps+len(j.ops) > maxBatchOps)) {
			break
		}
		clash := false
		for _, k := range j.keys {
			clash = clash || written[k]
		}
		if clash {
			break
		}
		for _, k := range j.keys {
			written[k] = true
		}
		for _, k := range j.cmpKeys {
			cmps[k] = true
		}
		nOps += len(j.ops)
		n++
	}
	return queue[:n:n], queue[n:]
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
	deadline := time.Now().Add(10 * time.Second)
	for _, j := range jobs {
		if d, ok := j.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var storeErr error
	if len(jobs) > 1 {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		seen := map[string]bool{}
		for _, j := range jobs {
			for i, c := range j.cmps {
				// Jobs of one node and block compare the same node, pool
				// and block revisions: etcd checks each once.
				if k := j.cmpKeys[i]; !seen[k] {
					seen[k] = true
					cmps = append(cmps, c)
				}
			}
			ops = append(ops, j.ops...)
		}
		resp, err := a.store.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err == nil && resp.Succeeded {
			for _, j := range jobs {
				j.resp = resp
				close(j.done)
			}
			return
		}
		storeErr = unanswered(err)
	}
	for _, j := range jobs {
		if j.resp, j.err = nil, j.ctx.Err(); j.err == nil {
			j.err = storeErr
		}
		if j.err == nil {
			j.resp, j.err = a.store.Txn(j.ctx).If(j.cmps...).Then(j.ops...).Else(j.elseOps...).Commit()
			storeErr = unanswered(j.err)
		}
		close(j.done)
	}
}

// unanswered returns err if it says etcd is not answering, else nil: once
// a transaction of a batch got no answer, the batch's other jobs fail with
// it rather than each waiting for etcd in turn.
func unanswered(err error) error {
	if errors.Is(err, errStoreDown) || errors.Is(err, errStoreTimeout) {
		return err
	}
	return nil
}

// cmpKey identifies a compare: two with the same key are the same check.
// Variable-length fields are length-prefixed, so no two differ in a way
// the key hides.
func cmpKey(c clientv3.Cmp) string {
	pc := c.GetCompare()
	var v []byte
	switch u := pc.TargetUnion.(type) {
	case *etcdserverpb.Compare_Version:
		v = strconv.AppendInt(nil, u.Version, 10)
	case *etcdserverpb.Compare_CreateRevision:
		v = strconv.AppendInt(nil, u.CreateRevision, 10)
	case *etcdserverpb.Compare_ModRevision:
		v = strconv.AppendInt(nil, u.ModRevision, 10)
	case *etcdserverpb.Compare_Lease:
		v = strconv.AppendInt(nil, u.Lease, 10)
	case *etcdserverpb.Compare_Value:
		v = u.Value
	}
	b := make([]byte, 0, 32+len(v)+len(pc.Key)+len(pc.RangeEnd))
	b = strconv.AppendInt(b, int64(pc.Target), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(pc.Result), 10)
	for _, f := range [][]byte{v, pc.Key, pc.RangeEnd} {
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(len(f)), 10)
		b = append(b, ':')
		b = append(b, f...)
	}
	return string(b)
}
