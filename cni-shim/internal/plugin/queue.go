package plugin

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// QueueDelete writes a DEL for att into dir as a
// datapathv1alpha1.QueuedDelete in protojson, one file per attachment, for
// axon-datapath to replay when it starts. The file appears whole or not at
// all (written to a temporary file, synced, then renamed), so the agent
// never reads half a record; the directory is synced after the rename, so
// the record survives a crash once QueueDelete returns.
func QueueDelete(dir string, att *datapathv1alpha1.Attachment) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create delete queue: %w", err)
	}
	b, err := protojson.Marshal(&datapathv1alpha1.QueuedDelete{
		ContainerId:   att.GetContainerId(),
		InterfaceName: att.GetInterfaceName(),
	})
	if err != nil {
		return fmt.Errorf("encode queued delete: %w", err)
	}
	// Escaped so that any container ID or interface name is one file name.
	name := url.PathEscape(att.GetContainerId()) + "_" + url.PathEscape(att.GetInterfaceName()) + ".json"
	tmp, err := os.CreateTemp(dir, ".queue-*")
	if err != nil {
		return fmt.Errorf("queue delete: %w", err)
	}
	if err := writeAndClose(tmp, b); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("queue delete: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("queue delete: %w", err)
	}
	// The rename lives in the directory: without this a crash could lose it
	// (DELs are rare, so the extra sync costs nothing that matters).
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("queue delete: %w", err)
	}
	return nil
}

// syncDir flushes dir's entries to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return d.Close()
}

// writeAndClose writes b to f, syncs it so that the renamed file is never
// empty after a crash, and closes it.
func writeAndClose(f *os.File, b []byte) error {
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
