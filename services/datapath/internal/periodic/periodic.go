// Package periodic runs the node agent's background work on a ticker.
package periodic

import (
	"context"
	"time"
)

// Every calls fn each interval until ctx ends; the first call comes after
// one interval.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}
