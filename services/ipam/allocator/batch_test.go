package allocator

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func job(ops int, keys ...string) *commitJob {
	j := &commitJob{keys: keys}
	for i := range ops {
		j.cmps = append(j.cmps, clientv3.Compare(clientv3.CreateRevision(fmt.Sprint(i)), "=", 0))
		j.ops = append(j.ops, clientv3.OpPut(fmt.Sprint(i), ""))
	}
	return j
}

func TestNextBatch(t *testing.T) {
	many := make([]*commitJob, maxBatchJobs+3)
	for i := range many {
		many[i] = job(1, fmt.Sprint("k", i))
	}
	tests := []struct {
		name      string
		queue     []*commitJob
		wantBatch int
	}{
		{"one job", []*commitJob{job(3, "a")}, 1},
		{"distinct keys go together", []*commitJob{job(3, "a"), job(3, "b"), job(3, "c")}, 3},
		{"a key written twice ends the batch", []*commitJob{job(3, "a"), job(3, "b"), job(3, "a"), job(3, "c")}, 2},
		{"at most maxBatchJobs", many, maxBatchJobs},
		{"at most maxBatchOps operations", []*commitJob{job(60, "a"), job(30, "b"), job(20, "c")}, 2},
		{"a first job over the limit still goes alone", []*commitJob{job(maxBatchOps+1, "a"), job(1, "b")}, 1},
		{"a job repeating its own key is not a clash", []*commitJob{job(2, "a", "a"), job(1, "b")}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch, rest := nextBatch(tt.queue)
			if len(batch) != tt.wantBatch || len(rest) != len(tt.queue)-tt.wantBatch {
				t.Fatalf("batch of %d, %d left; want %d and %d", len(batch), len(rest), tt.wantBatch, len(tt.queue)-tt.wantBatch)
			}
			for i, j := range batch {
				if j != tt.queue[i] {
					t.Fatalf("batch[%d] is not queue[%d]: order changed", i, i)
				}
			}
			if len(rest) > 0 && rest[0] != tt.queue[tt.wantBatch] {
				t.Fatal("rest does not start where the batch ends")
			}
			// Appending to the batch must not overwrite the queue's rest.
			if len(rest) > 0 {
				_ = append(batch, job(1, "z"))
				if rest[0] != tt.queue[tt.wantBatch] {
					t.Fatal("appending to the batch overwrote the queue")
				}
			}
		})
	}
}
