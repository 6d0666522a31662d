package testpoll

import (
	"errors"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	errNotYet := errors.New("not yet")
	tests := []struct {
		name    string
		okAfter int // calls before cond holds; -1 never
		timeout time.Duration
		wantErr bool
	}{
		{name: "at once", okAfter: 0, timeout: time.Second},
		{name: "after a few polls", okAfter: 3, timeout: 5 * time.Second},
		{name: "never", okAfter: -1, timeout: 50 * time.Millisecond, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := wait(t, tc.timeout, func() error {
				calls++
				if tc.okAfter >= 0 && calls > tc.okAfter {
					return nil
				}
				return errNotYet
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("wait = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, errNotYet) {
				t.Errorf("wait = %v, want it to wrap the condition's last error", err)
			}
		})
	}
}
