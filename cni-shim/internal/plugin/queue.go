package plugin

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// QueuedDelete is one DEL waiting in the queue directory. axon-datapath
// reads the same format when it replays the queue.
type QueuedDelete struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// QueueDelete writes a DEL into dir, atomically, one file per attachment.
func QueueDelete(dir, containerID, ifName string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create delete queue: %w", err)
	}
	b, err := json.Marshal(QueuedDelete{ContainerID: containerID, IfName: ifName})
	if err != nil {
		return err
	}
	name := url.PathEscape(containerID) + "_" + url.PathEscape(ifName) + ".json"
	tmp, err := os.CreateTemp(dir, ".queue-*")
	if err != nil {
		return fmt.Errorf("queue delete: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("queue delete: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("queue delete: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}
