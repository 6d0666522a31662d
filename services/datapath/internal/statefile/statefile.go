// Package statefile writes the node agent's files in its state directory
// (endpoint records, queued releases, remote nodes) so that a crash leaves
// each whole.
package statefile

import (
	"fmt"
	"os"
)

// WriteAtomic replaces path with b: a crash of the agent leaves the old
// content or the new, never a mix. There is no fsync (it would cost every
// CNI ADD a disk flush): the files describe pods that do not outlive the
// node, and the state directory is tmpfs (/run) in deployments; a file
// damaged by a power loss is skipped when read.
func WriteAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
