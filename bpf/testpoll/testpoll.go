// Package testpoll waits in tests for a condition that becomes true
// asynchronously (a watch delivering, a server turning healthy), instead
// of a deadline loop written out in each test.
package testpoll

import (
	"fmt"
	"testing"
	"time"
)

// Polling intervals: the first check comes quickly for conditions that are
// nearly met; the interval doubles up to maxInterval so that expensive
// checks (exec'ing ping in a namespace) do not hammer the machine.
const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 250 * time.Millisecond
)

// Until calls cond until it returns nil and fails the test with cond's
// last error if that does not happen within timeout. The test's context
// ending stops the wait early, as a failure.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := wait(t, timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// wait is Until without failing the test, so that it can be tested.
func wait(t testing.TB, timeout time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := firstInterval
	for {
		err := cond()
		if err == nil {
			return nil
		}
		tick := time.NewTimer(interval)
		select {
		case <-t.Context().Done():
			tick.Stop()
			return fmt.Errorf("test ended while waiting: %w", err)
		case <-deadline.C:
			tick.Stop()
			// One last look: the condition may have become true while
			// the timer ran out.
			if err = cond(); err == nil {
				return nil
			}
			return fmt.Errorf("not within %s: %w", timeout, err)
		case <-tick.C:
		}
		interval = min(2*interval, maxInterval)
	}
}
