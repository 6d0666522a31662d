package endpoint

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// queueDelete writes a DEL as axon-cni queues it: a QueuedDelete in
// protojson, one file per attachment named after it.
func (e *testEnv) queueDelete(id, ifName string) string {
	e.t.Helper()
	b, err := protojson.Marshal(&datapathv1alpha1.QueuedDelete{ContainerId: id, InterfaceName: ifName})
	if err != nil {
		e.t.Fatal(err)
	}
	name := id + "_" + ifName + ".json"
	if err := os.WriteFile(filepath.Join(e.queueDir, name), b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *testEnv) queued() []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.queueDir)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	return out
}

// Queued DELs are replayed and their files removed; a failing one stays
// for the next replay; an unreadable or invalid one is dropped; other files
// are not the queue's.
func TestReplayDeletes(t *testing.T) {
	e := newTestManager(t, testOpts{})
	nsA, nsB := e.podNS("a"), e.podNS("b")
	a := e.create("a", "eth0", nsA)
	b := e.create("b", "eth0", nsB)
	e.queueDelete("a", "eth0")
	fileB := e.queueDelete("b", "eth0")
	e.queueDelete("unknown", "eth0") // a DEL of nothing is success
	for name, content := range map[string]string{
		"garbage.json":   `{"containerID": "a"`,
		"no-id.json":     `{"ifName": "eth0"}`,
		"bad-name.json":  `{"containerID": "a", "ifName": "eth0/../../x"}`,
		"notes.txt":      `{"containerID": "b", "ifName": "eth0"}`,
		".queue-1234567": `{"containerID": "b", "ifName": "eth0"}`, // a write in progress
	} {
		if err := os.WriteFile(filepath.Join(e.queueDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The queue is read in name order: pod b's DEL makes the second
	// LinkDel, which fails.
	e.nl.FailOn(nlfake.NodeNS, "LinkDel", 2, errInjected)

	e.m.ReplayDeletes(t.Context())
	e.assertNoEndpoint(a.GetAttachment(), nsA)
	if _, ok := e.nl.Link(nlfake.NodeNS, HostName(b.GetAttachment())); !ok {
		t.Fatal("pod b's veth went although its DEL failed")
	}
	want := []string{".queue-1234567", fileB, "notes.txt"}
	if got := e.queued(); !slices.Equal(got, want) {
		t.Errorf("queue after the replay %v, want %v", got, want)
	}

	e.m.ReplayDeletes(t.Context())
	e.assertNoEndpoint(b.GetAttachment(), nsB)
	e.assertEmptyNode()
	if got, want := e.queued(), []string{".queue-1234567", "notes.txt"}; !slices.Equal(got, want) {
		t.Errorf("queue after the second replay %v, want %v", got, want)
	}
}

// Without a queue directory configured, or with none on disk, there is
// nothing to replay.
func TestReplayDeletesNoQueue(t *testing.T) {
	e := newTestManager(t, testOpts{})
	e.create("a", "eth0", e.podNS("a"))
	if err := os.RemoveAll(e.queueDir); err != nil {
		t.Fatal(err)
	}
	e.m.ReplayDeletes(t.Context())
	if len(e.records()) != 1 || len(e.linkNames(nlfake.NodeNS)) != 1 {
		t.Errorf("endpoint touched: records %v", e.records())
	}
}

// queueDeleteHashed writes a DEL as axon-cni names it since issue 17: the
// hex SHA-256 of the length-prefixed container ID and interface name. The
// agent reads any *.json, so only the names differ from queueDelete's.
func (e *testEnv) queueDeleteHashed(id, ifName string) {
	e.t.Helper()
	b, err := protojson.Marshal(&datapathv1alpha1.QueuedDelete{ContainerId: id, InterfaceName: ifName})
	if err != nil {
		e.t.Fatal(err)
	}
	var key []byte
	for _, part := range []string{id, ifName} {
		key = binary.BigEndian.AppendUint64(key, uint64(len(part)))
		key = append(key, part...)
	}
	sum := sha256.Sum256(key)
	if err := os.WriteFile(filepath.Join(e.queueDir, hex.EncodeToString(sum[:])+".json"), b, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// Two attachments whose old-style names collided ("qa_b"+"c" and
// "qa"+"b_c") each replay from their own file.
func TestReplayDeletesDistinctAttachments(t *testing.T) {
	e := newTestManager(t, testOpts{})
	nsA, nsB := e.podNS("a"), e.podNS("b")
	a := e.create("qa_b", "c", nsA)
	b := e.create("qa", "b_c", nsB)
	e.queueDeleteHashed("qa_b", "c")
	e.queueDeleteHashed("qa", "b_c")
	if got := e.queued(); len(got) != 2 {
		t.Fatalf("queue holds %v, want two files", got)
	}

	e.m.ReplayDeletes(t.Context())
	e.assertNoEndpoint(a.GetAttachment(), nsA)
	e.assertNoEndpoint(b.GetAttachment(), nsB)
	e.assertEmptyNode()
	if got := e.queued(); len(got) != 0 {
		t.Errorf("queue after the replay %v, want empty", got)
	}
}
