package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestScratchImmediatePut(t *testing.T) {
	c := New(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	l, _ := c.Leader(ctx)
	c.Stop(l)
	m := time.Now()
	_, err := cli.Put(ctx, "k", "2")
	t.Logf("put right after leader stop: %v after %v", err, time.Since(m))
}
