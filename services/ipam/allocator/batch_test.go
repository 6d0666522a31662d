package allocator

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// job is a commit job writing keys with ops compares and puts; the
// compares are its own unless shared names a compare every such job makes.
func job(ops int, keys ...string) *commitJob {
	var cmps []clientv3.Cmp
	var puts []clientv3.Op
	for i := range ops {
		k := fmt.Sprint(keys, i)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		puts = append(puts, clientv3.OpPut(k, ""))
	}
	return newCommitJob(context.Background(), cmps, puts, nil, keys)
}

// sharing adds a compare on the shared key to j.
func sharing(j *commitJob, rev int64) *commitJob {
	c := clientv3.Compare(clientv3.ModRevision("shared"), "=", rev)
	j.cmps = append(j.cmps, c)
	j.cmpKeys = append(j.cmpKeys, cmpKey(c))
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
		{"a compare several jobs make counts once", []*commitJob{sharing(job(49, "a"), 7), sharing(job(50, "b"), 7), job(1, "c")}, 2},
		{"the same key at another revision counts again", []*commitJob{sharing(job(49, "a"), 7), sharing(job(50, "b"), 8)}, 1},
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

func TestCmpKey(t *testing.T) {
	tests := []struct {
		name string
		a, b clientv3.Cmp
		same bool
	}{
		{"same check", clientv3.Compare(clientv3.ModRevision("k"), "=", 5), clientv3.Compare(clientv3.ModRevision("k"), "=", 5), true},
		{"other revision", clientv3.Compare(clientv3.ModRevision("k"), "=", 5), clientv3.Compare(clientv3.ModRevision("k"), "=", 6), false},
		{"other target", clientv3.Compare(clientv3.ModRevision("k"), "=", 5), clientv3.Compare(clientv3.CreateRevision("k"), "=", 5), false},
		{"other result", clientv3.Compare(clientv3.ModRevision("k"), "=", 5), clientv3.Compare(clientv3.ModRevision("k"), "<", 5), false},
		{"other key", clientv3.Compare(clientv3.ModRevision("k"), "=", 5), clientv3.Compare(clientv3.ModRevision("k2"), "=", 5), false},
		{"prefix or not", clientv3.Compare(clientv3.ModRevision("k"), "<", 5), clientv3.Compare(clientv3.ModRevision("k"), "<", 5).WithPrefix(), false},
		{"value and key boundary", clientv3.Compare(clientv3.Value("a\x00b"), "=", "c"), clientv3.Compare(clientv3.Value("a"), "=", "c\x00b"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cmpKey(tt.a) == cmpKey(tt.b); got != tt.same {
				t.Errorf("same key = %v, want %v", got, tt.same)
			}
		})
	}
}
