package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/statefile"
)

// releaseTimeout bounds one IPAM release of the background worker: a hung
// IPAM must not hold the attachment's lock (an ADD of it waits) for long.
const releaseTimeout = 5 * time.Second

// pendingRelease is an IPAM release that is queued: every release of a
// deleted endpoint, until IPAM takes it.
type pendingRelease struct {
	ContainerID string `json:"containerID"`
	Interface   string `json:"interface"`
	Sequence    uint64 `json:"sequence"`
}

// ReleasesQueued is readable when a release was queued since it was last
// read: the release worker (which runs RetryReleases) waits on it, besides
// its retry interval, so an address goes back to IPAM as soon as IPAM
// takes it.
func (m *Manager) ReleasesQueued() <-chan struct{} { return m.releaseWake }

// wakeReleases tells the release worker a release was queued; one pending
// wake-up covers any number of releases.
func (m *Manager) wakeReleases() {
	select {
	case m.releaseWake <- struct{}{}:
	default:
	}
}

// releaseDir holds the queued releases, one file per endpoint.
func (m *Manager) releaseDir() string { return filepath.Join(m.cfg.StateDir, "releases") }

// queueRelease records a release for RetryReleases, atomically: a crash
// must not leave a half-written file that is then dropped as unreadable,
// losing the release.
func (m *Manager) queueRelease(hostName string, att *datapathv1alpha1.Attachment, seq uint64) error {
	if err := os.MkdirAll(m.releaseDir(), 0o700); err != nil {
		return fmt.Errorf("create the release queue: %w", err)
	}
	b, err := json.Marshal(pendingRelease{att.GetContainerId(), att.GetInterfaceName(), seq})
	if err != nil {
		return fmt.Errorf("encode the release: %w", err)
	}
	return statefile.WriteAtomic(filepath.Join(m.releaseDir(), hostName+".json"), b)
}

// releaseOrQueue releases an allocation made for a create that failed.
func (m *Manager) releaseOrQueue(hostName string, att *datapathv1alpha1.Attachment, seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
		Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
		ExpectedSequence: seq,
	}); err != nil {
		if qerr := m.queueRelease(hostName, att, seq); qerr != nil {
			m.log.Error("address release lost", "endpoint", hostName, "err", err, "queue_err", qerr)
		}
	}
}

// cancelRelease drops the queued release of hostName's attachment, if
// any. It is called under the attachment's lock once IPAM has answered an
// ADD: IPAM keeps one allocation per handle and answers an ADD with the one
// the handle still has, so a queued release would either take the new
// endpoint's addresses or do nothing.
func (m *Manager) cancelRelease(hostName string) {
	path := filepath.Join(m.releaseDir(), hostName+".json")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("drop the queued release of a re-created endpoint", "endpoint", hostName, "err", err)
	}
}

// RetryReleases does the queued address releases: those of deleted
// endpoints, and those IPAM did not take before. A release IPAM does not
// answer (or answers UNAVAILABLE) ends the pass: the others would wait for
// it in turn; the next pass tries again.
func (m *Manager) RetryReleases(ctx context.Context) {
	entries, err := os.ReadDir(m.releaseDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		hostName, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue // a write in progress, or one a crash cut short
		}
		if !m.retryRelease(ctx, hostName) {
			return
		}
	}
}

// retryRelease does hostName's queued release under the attachment's lock,
// so that an ADD of the attachment (which cancels it) cannot slip between
// reading the release and doing it. It reports false when IPAM did not
// answer.
func (m *Manager) retryRelease(ctx context.Context, hostName string) bool {
	defer m.locks.lock(hostName)()
	path := filepath.Join(m.releaseDir(), hostName+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		return true // cancelled meanwhile, or unreadable until the next retry
	}
	var p pendingRelease
	if err := json.Unmarshal(b, &p); err != nil {
		m.log.Error("dropping unreadable pending release", "file", path, "err", err)
		_ = os.Remove(path)
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	_, err = m.ipam.ReleaseIP(rctx, &ipamv1alpha1.ReleaseIPRequest{
		Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: p.ContainerID, InterfaceName: p.Interface},
		ExpectedSequence: p.Sequence,
	})
	switch code := status.Code(err); {
	case err == nil:
		_ = os.Remove(path)
	case ctx.Err() != nil:
		return false // the worker stops
	case code == codes.Unavailable || code == codes.DeadlineExceeded:
		m.log.Warn("IPAM does not take a queued address release; retrying later", "endpoint", hostName,
			"container", p.ContainerID, "interface", p.Interface, "err", err)
		return false
	case code == codes.InvalidArgument:
		// No retry can make the request valid: the allocation, if any,
		// is IPAM's to reclaim.
		m.log.Warn("IPAM refuses a queued address release as invalid; dropping it", "endpoint", hostName,
			"container", p.ContainerID, "interface", p.Interface, "err", err)
		_ = os.Remove(path)
	default:
		m.log.Warn("queued address release failed; retrying later", "endpoint", hostName,
			"container", p.ContainerID, "interface", p.Interface, "err", err)
	}
	return true
}
