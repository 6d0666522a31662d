package allocator

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// hangingKV is an etcd that never answers: every request waits for its
// context.
type hangingKV struct{ clientv3.KV }

func (hangingKV) Get(ctx context.Context, _ string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestStoreRequests(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		// down marks the store down while the request waits.
		down bool
		want error
	}{
		{"request timeout", 50 * time.Millisecond, false, errStoreTimeout},
		{"store found down while in flight", time.Hour, true, errStoreDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &store{kv: hangingKV{}, timeout: tc.timeout}
			errc := make(chan error, 1)
			go func() {
				_, err := s.Get(t.Context(), "k")
				errc <- err
			}()
			if tc.down {
				// The request may not have started yet: either way it
				// fails as down, in flight or at once.
				if !s.setDown(true) {
					t.Fatal("setDown(true) on a store that was up reported no change")
				}
			}
			select {
			case err := <-errc:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Get = %v; want %v", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("Get still waits")
			}
			if tc.down {
				if _, err := s.Get(t.Context(), "k"); !errors.Is(err, errStoreDown) {
					t.Errorf("Get while down = %v; want %v", err, errStoreDown)
				}
				if !s.setDown(false) || s.setDown(false) {
					t.Error("setDown(false) reported no change, or a change twice")
				}
			}
		})
	}
}
