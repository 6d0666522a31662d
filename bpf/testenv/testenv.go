// Package testenv decides what a test does when the machine lacks something
// it needs: root, BPF, bpffs or a kernel feature. On a developer's machine
// the test skips and says why. Under CI (CI=true or CI=1, as CI systems
// set it) the test fails naming what is missing, because CI runs where
// everything is present and a skip there would hide a regression, such as a
// verifier rejection reported as "BPF unavailable".
//
// It lives in the bpf module, which every module with kernel tests already
// imports, so all of them share one behaviour.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// BPFFSRoot is where bpffs is mounted.
const BPFFSRoot = "/sys/fs/bpf"

// CI reports whether the tests run under CI: the CI environment variable
// holds a true boolean ("true", "1"), as GitHub Actions, GitLab and .ci/run
// set it. An unparsable value counts as not CI.
func CI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Unavailable ends the test because what it needs is missing: it skips
// with what and err, or fails under CI. err may be nil.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	msg := "needs " + what
	if err != nil {
		msg = fmt.Sprintf("%s: %v", msg, err)
	}
	if CI() {
		t.Fatalf("%s (CI is set, so a missing requirement fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// Partial records that the test runs on without a part it cannot exercise
// here (what names the part): logged normally, a failure under CI.
func Partial(t testing.TB, what string) {
	t.Helper()
	if CI() {
		t.Errorf("%s (CI is set, so every part of the test must run)", what)
		return
	}
	t.Log(what)
}

// RequireRoot ends the test (see [Unavailable]) unless it runs as root,
// which namespaces, links and BPF programs need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if euid := os.Geteuid(); euid != 0 {
		Unavailable(t, "root", fmt.Errorf("running as uid %d", euid))
	}
}

// RequireBPF ends the test (see [Unavailable]) unless the process can load
// BPF tc programs: it must be root, lift the memlock limit and pass the
// kernel's probe. A probe error other than "not supported" or "permission
// denied" fails the test everywhere.
func RequireBPF(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		if errors.Is(err, os.ErrPermission) {
			Unavailable(t, "permission to lift the memlock limit for BPF", err)
		}
		t.Fatalf("remove memlock rlimit: %v", err)
	}
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) || errors.Is(err, errors.ErrUnsupported) {
			Unavailable(t, "BPF tc programs", err)
		}
		t.Fatalf("probe BPF tc programs: %v", err)
	}
}

// RequireLoaded checks the error of loading BPF objects (named by what):
// a verifier rejection fails the test everywhere; a missing privilege
// (EPERM, EACCES) ends it as [Unavailable]; any other error fails it.
// The verifier check comes first because a rejection carries EACCES, so it
// would otherwise pass for a missing privilege and a regression would skip.
func RequireLoaded(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && len(verr.Log) > 0 {
		t.Fatalf("load %s: %+v", what, verr)
	}
	if errors.Is(err, os.ErrPermission) {
		Unavailable(t, "privileges to load "+what, err)
	}
	t.Fatalf("load %s: %v", what, err)
}

// RequireKernel ends the test because the kernel feature what, which
// Linux major.minor introduced, is missing (err says how that showed).
// On an older kernel that is [Unavailable]; on major.minor or later the
// feature should be there, so the test fails everywhere.
func RequireKernel(t testing.TB, what string, major, minor int, err error) {
	t.Helper()
	var u unix.Utsname
	if uerr := unix.Uname(&u); uerr != nil {
		t.Fatalf("uname: %v", uerr)
	}
	release := unix.ByteSliceToString(u.Release[:])
	has, perr := releaseAtLeast(release, major, minor)
	if perr != nil {
		t.Fatal(perr)
	}
	if has {
		t.Fatalf("%s missing on Linux %s, which has it: %v", what, release, err)
	}
	Unavailable(t, fmt.Sprintf("%s (Linux %d.%d)", what, major, minor), err)
}

// releaseAtLeast reports whether the kernel release (uname -r, such as
// "6.18.0-rc1") is major.minor or later.
func releaseAtLeast(release string, major, minor int) (bool, error) {
	var maj, min int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &min); err != nil {
		return false, fmt.Errorf("parse kernel release %q: %w", release, err)
	}
	return maj > major || (maj == major && min >= minor), nil
}

// RequireBPFFS ends the test (see [Unavailable]) unless bpffs is mounted
// on [BPFFSRoot]; as root it mounts it when it is not.
func RequireBPFFS(t testing.TB) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	RequireRoot(t)
	if err := os.MkdirAll(BPFFSRoot, 0o755); err != nil {
		Unavailable(t, "bpffs", err)
	}
	if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, ""); err != nil {
		Unavailable(t, "bpffs on "+BPFFSRoot, fmt.Errorf("mount: %w", err))
	}
}

// BPFFSDir returns a fresh directory on bpffs whose name starts with
// prefix, removed with its pins when the test ends.
func BPFFSDir(t testing.TB, prefix string) string {
	t.Helper()
	RequireBPFFS(t)
	dir, err := os.MkdirTemp(BPFFSRoot, prefix)
	if err != nil {
		Unavailable(t, "a writable bpffs", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
