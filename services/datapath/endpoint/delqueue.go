package endpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

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
		// Each file is one QueuedDelete in protojson, as axon-cni writes it;
		// unknown fields are ignored so a newer axon-cni's records replay.
		var q datapathv1alpha1.QueuedDelete
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &q); err != nil || q.GetContainerId() == "" || q.GetInterfaceName() == "" {
			m.log.Error("dropping unreadable queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		_, err = m.DeleteEndpoint(ctx, &datapathv1alpha1.Attachment{ContainerId: q.GetContainerId(), InterfaceName: q.GetInterfaceName()})
		if errors.Is(err, ErrInvalid) {
			// No replay can make it valid: kept, it would fail forever.
			m.log.Error("dropping invalid queued delete", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		if err != nil {
			m.log.Warn("queued delete failed; kept for the next replay", "container", q.GetContainerId(), "err", err)
			continue
		}
		m.log.Info("replayed queued delete", "container", q.GetContainerId(), "interface", q.GetInterfaceName())
		_ = os.Remove(path)
	}
}
