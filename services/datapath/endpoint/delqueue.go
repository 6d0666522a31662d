package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// queuedDelete is a DEL that axon-cni queued while the agent was down, in
// the file format axon-cni writes (one JSON file per attachment).
type queuedDelete struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// ReplayDeletes runs every queued DEL and removes its file once done; a
// failed one stays queued for the next replay, unless it is invalid.
func (m *Manager) ReplayDeletes(ctx context.Context) {
	if m.cfg.DeleteQueue == "" {
		return
	}
	entries, err := os.ReadDir(m.cfg.DeleteQueue)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(m.cfg.DeleteQueue, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var q queuedDelete
		if err := json.Unmarshal(b, &q); err != nil || q.ContainerID == "" || q.IfName == "" {
			m.log.Error("dropping unreadable queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		_, err = m.DeleteEndpoint(ctx, &datapathv1alpha1.Attachment{ContainerId: q.ContainerID, InterfaceName: q.IfName})
		if errors.Is(err, ErrInvalid) {
			// No replay can make it valid: kept, it would fail forever.
			m.log.Error("dropping invalid queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		if err != nil {
			m.log.Warn("queued delete failed; kept for the next replay", "container", q.ContainerID, "err", err)
			continue
		}
		m.log.Info("replayed queued delete", "container", q.ContainerID, "interface", q.IfName)
		_ = os.Remove(path)
	}
}
