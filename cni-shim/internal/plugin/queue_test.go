package plugin

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// TestQueueDeleteFormat checks the queued-DEL file against the contract: one
// complete file per attachment, with the keys of the files written before
// the format was a protobuf message, readable as a QueuedDelete.
func TestQueueDeleteFormat(t *testing.T) {
	tests := []struct {
		name         string
		containerID  string
		ifName       string
		wantFileName string
	}{
		{"plain", "abc123", "eth0", "abc123_eth0.json"},
		{"escaped", "ctr/1", "net 1", "ctr%2F1_net%201.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "queue")
			att := &datapathv1alpha1.Attachment{ContainerId: tc.containerID, InterfaceName: tc.ifName}
			if err := QueueDelete(dir, att); err != nil {
				t.Fatalf("QueueDelete: %v", err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != tc.wantFileName {
				t.Fatalf("queue holds %v, want only %s (no temporary file left)", entries, tc.wantFileName)
			}
			b, err := os.ReadFile(filepath.Join(dir, tc.wantFileName))
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]string
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatalf("file %s is not a JSON object of strings: %v", b, err)
			}
			if keys := slices.Sorted(maps.Keys(raw)); !slices.Equal(keys, []string{"containerID", "ifName"}) {
				t.Errorf("keys = %v, want [containerID ifName]", keys)
			}
			var q datapathv1alpha1.QueuedDelete
			if err := protojson.Unmarshal(b, &q); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if q.GetContainerId() != tc.containerID || q.GetInterfaceName() != tc.ifName {
				t.Errorf("decoded %v, want %s/%s", &q, tc.containerID, tc.ifName)
			}
		})
	}
}

// TestQueuedDeleteReadsOldFiles checks that files written by an axon-cni
// from before the protobuf message still decode.
func TestQueuedDeleteReadsOldFiles(t *testing.T) {
	var q datapathv1alpha1.QueuedDelete
	if err := protojson.Unmarshal([]byte(`{"containerID":"c1","ifName":"eth0"}`), &q); err != nil {
		t.Fatal(err)
	}
	if q.GetContainerId() != "c1" || q.GetInterfaceName() != "eth0" {
		t.Errorf("decoded %v", &q)
	}
}
