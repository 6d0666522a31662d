package plugin

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
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
		name        string
		containerID string
		ifName      string
	}{
		{"plain", "abc123", "eth0"},
		{"path characters", "ctr/1", "net 1"},
		{"path tricks", "../../etc/passwd", ".."},
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
			if len(entries) != 1 || !queueName.MatchString(entries[0].Name()) {
				t.Fatalf("queue holds %v, want only one <hex SHA-256>.json (no temporary file left)", entries)
			}
			b, err := os.ReadFile(filepath.Join(dir, entries[0].Name()))
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

// queueName is the form of every queue file name: nothing an attachment
// holds can add a path element to it.
var queueName = regexp.MustCompile(`^[0-9a-f]{64}\.json$`)

// TestQueueDeleteDistinctAttachments checks that attachments a separator-
// joined name would merge get files of their own, each with its record, and
// that queueing one attachment again replaces its file.
func TestQueueDeleteDistinctAttachments(t *testing.T) {
	atts := []*datapathv1alpha1.Attachment{
		{ContainerId: "qa_b", InterfaceName: "c"},
		{ContainerId: "qa", InterfaceName: "b_c"},
		{ContainerId: "qa%5Fb", InterfaceName: "c"},
		{ContainerId: "q", InterfaceName: "ab_c"},
	}
	dir := filepath.Join(t.TempDir(), "queue")
	for _, att := range append(atts, atts[0]) {
		if err := QueueDelete(dir, att); err != nil {
			t.Fatalf("QueueDelete(%v): %v", att, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var q datapathv1alpha1.QueuedDelete
		if err := protojson.Unmarshal(b, &q); err != nil {
			t.Fatalf("decode %s: %v", e.Name(), err)
		}
		got = append(got, q.GetContainerId()+"/"+q.GetInterfaceName())
	}
	var want []string
	for _, att := range atts {
		want = append(want, att.GetContainerId()+"/"+att.GetInterfaceName())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("queued records %v, want one each of %v", got, want)
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
