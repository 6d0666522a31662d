package plugin

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// QueueDelete writes a DEL for att into dir as a
// datapathv1alpha1.QueuedDelete in protojson, one file per attachment
// (named by queueFileName), for axon-datapath to replay when it starts. The file appears whole or not at
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
	name := queueFileName(att)
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

// queueFileName names att's queue file: the hex SHA-256 of the container ID
// and interface name, each prefixed with its length, + ".json". The length
// prefixes make the encoding injective, so distinct attachments never share
// a file (a separator such as "_" can appear in either part), and a hex name
// never carries a path element whatever the input. The record inside, not
// the name, says which attachment it is.
func queueFileName(att *datapathv1alpha1.Attachment) string {
	var b []byte
	for _, part := range []string{att.GetContainerId(), att.GetInterfaceName()} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(part)))
		b = append(b, part...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) + ".json"
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
