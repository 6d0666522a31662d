package agent

import (
	"context"
	"encoding/json"
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

// replayDeletes runs every queued DEL and removes its file once done.
func (a *Agent) replayDeletes(ctx context.Context) {
	if a.cfg.DeleteQueue == "" {
		return
	}
	entries, err := os.ReadDir(a.cfg.DeleteQueue)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(a.cfg.DeleteQueue, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var q queuedDelete
		if err := json.Unmarshal(b, &q); err != nil || q.ContainerID == "" || q.IfName == "" {
			a.log.Error("dropping unreadable queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		if _, err := a.DeleteEndpoint(ctx, &datapathv1alpha1.Attachment{ContainerId: q.ContainerID, InterfaceName: q.IfName}); err != nil {
			a.log.Warn("queued delete failed; kept for the next replay", "container", q.ContainerID, "err", err)
			continue
		}
		a.log.Info("replayed queued delete", "container", q.ContainerID, "interface", q.IfName)
		_ = os.Remove(path)
	}
}
