package endpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/statefile"
)

// pendingRelease is an IPAM release that failed and is retried.
type pendingRelease struct {
	ContainerID string `json:"containerID"`
	Interface   string `json:"interface"`
	Sequence    uint64 `json:"sequence"`
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

// RetryReleases retries the address releases that IPAM was unavailable
// for when their endpoints were deleted.
func (m *Manager) RetryReleases(ctx context.Context) {
	entries, err := os.ReadDir(m.releaseDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue // a write in progress, or one a crash cut short
		}
		path := filepath.Join(m.releaseDir(), e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var p pendingRelease
		if err := json.Unmarshal(b, &p); err != nil {
			m.log.Error("dropping unreadable pending release", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		_, err = m.ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
			Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: p.ContainerID, InterfaceName: p.Interface},
			ExpectedSequence: p.Sequence,
		})
		if err == nil {
			_ = os.Remove(path)
		}
	}
}
