package testenv

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
)

func TestCI(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"", false}, {"true", true}, {"1", true}, {"TRUE", true},
		{"false", false}, {"0", false}, {"yes", false},
	} {
		t.Run(fmt.Sprintf("CI=%q", tc.value), func(t *testing.T) {
			t.Setenv("CI", tc.value)
			if got := CI(); got != tc.want {
				t.Errorf("CI() = %v, want %v", got, tc.want)
			}
		})
	}
}

// recorder is a testing.TB that records how the test would have ended;
// like testing.T, Skip and Fatalf end the calling goroutine.
type recorder struct {
	testing.TB
	skipped, failed string
}

// record runs fn with a recorder in its own goroutine, as a test runs.
func record(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func (r *recorder) Helper()          {}
func (r *recorder) Skip(args ...any) { r.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, a ...any) {
	r.failed = fmt.Sprintf(format, a...)
	runtime.Goexit()
}
func (r *recorder) Errorf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }
func (r *recorder) Log(args ...any)                {}

func TestUnavailable(t *testing.T) {
	const want = "needs root: running as uid 1000"
	for _, tc := range []struct {
		ci       string
		wantSkip bool
	}{
		{ci: "", wantSkip: true},
		{ci: "true", wantSkip: false},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := record(t, func(tb testing.TB) { Unavailable(tb, "root", errors.New("running as uid 1000")) })
			got, other := r.failed, r.skipped
			if tc.wantSkip {
				got, other = r.skipped, r.failed
			}
			if !strings.HasPrefix(got, want) || other != "" {
				t.Errorf("skipped %q, failed %q; want only the %s message to start with %q",
					r.skipped, r.failed, map[bool]string{true: "skip", false: "failure"}[tc.wantSkip], want)
			}
		})
	}
}

func TestRequireLoaded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantSkip bool
		wantFail bool
	}{
		{name: "loaded", err: nil},
		{name: "EPERM", err: fmt.Errorf("load program: %w", syscall.EPERM), wantSkip: true},
		{name: "EACCES", err: fmt.Errorf("load program: %w", syscall.EACCES), wantSkip: true},
		{name: "other", err: fmt.Errorf("load program: %w", os.ErrInvalid), wantFail: true},
		// A verifier rejection carries EACCES too; it must fail, not skip.
		{name: "verifier rejection", err: fmt.Errorf("load program: %w",
			&ebpf.VerifierError{Cause: syscall.EACCES, Log: []string{"R1 invalid mem access 'scalar'"}}), wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", "")
			r := record(t, func(tb testing.TB) { RequireLoaded(tb, "the datapath", tc.err) })
			if (r.skipped != "") != tc.wantSkip || (r.failed != "") != tc.wantFail {
				t.Errorf("skipped %q, failed %q; want skip %v, fail %v", r.skipped, r.failed, tc.wantSkip, tc.wantFail)
			}
		})
	}
}

func TestReleaseAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release      string
		major, minor int
		want         bool
	}{
		{"6.18.0", 6, 6, true},
		{"6.6.0-rc1", 6, 6, true},
		{"6.5.13-generic", 6, 6, false},
		{"7.0.0", 6, 6, true},
		{"5.15.0", 6, 6, false},
	} {
		got, err := releaseAtLeast(tc.release, tc.major, tc.minor)
		if err != nil || got != tc.want {
			t.Errorf("releaseAtLeast(%q, %d, %d) = %v, %v; want %v", tc.release, tc.major, tc.minor, got, err, tc.want)
		}
	}
	if _, err := releaseAtLeast("unknown", 6, 6); err == nil {
		t.Error("an unparsable release was accepted")
	}
}

// TestRequireKernel: a feature missing on a kernel that should have it
// fails even outside CI; on an older kernel it skips.
func TestRequireKernel(t *testing.T) {
	missing := errors.New("not supported")
	for _, tc := range []struct {
		name     string
		major    int
		wantSkip bool
	}{
		{name: "kernel has it", major: 1, wantSkip: false},
		{name: "kernel predates it", major: 999, wantSkip: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", "")
			r := record(t, func(tb testing.TB) { RequireKernel(tb, "tcx", tc.major, 0, missing) })
			if (r.skipped != "") != tc.wantSkip || (r.failed != "") == tc.wantSkip {
				t.Errorf("skipped %q, failed %q; want skip %v", r.skipped, r.failed, tc.wantSkip)
			}
		})
	}
}
