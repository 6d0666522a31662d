package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

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
		// Each file is one QueuedDelete in protojson, as axon-cni writes it;
		// unknown fields are ignored so a newer axon-cni's records replay.
		var q datapathv1alpha1.QueuedDelete
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &q); err != nil || q.GetContainerId() == "" || q.GetInterfaceName() == "" {
			a.log.Error("dropping unreadable queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		if _, err := a.DeleteEndpoint(ctx, &datapathv1alpha1.Attachment{ContainerId: q.GetContainerId(), InterfaceName: q.GetInterfaceName()}); err != nil {
			a.log.Warn("queued delete failed; kept for the next replay", "container", q.GetContainerId(), "err", err)
			continue
		}
		a.log.Info("replayed queued delete", "container", q.GetContainerId(), "interface", q.GetInterfaceName())
		_ = os.Remove(path)
	}
}
