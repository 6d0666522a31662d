package endpoint

import (
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// A damaged record (a power loss) is set aside, not fatal to listing.
func TestStoreSetsDamagedRecordsAside(t *testing.T) {
	dir := t.TempDir()
	s := store{dir: dir, log: slog.New(slog.DiscardHandler)}
	if err := os.WriteFile(filepath.Join(dir, "lxc000000000bad.json"), []byte("{trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	eps, err := s.list()
	if err != nil || len(eps) != 0 {
		t.Fatalf("list = %v, %v; want no endpoints and no error", eps, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lxc000000000bad.json.bad")); err != nil {
		t.Errorf("damaged record not set aside: %v", err)
	}
}

// A record of an earlier version, with every annotation of its pod, reads
// back with only Axon's.
func TestStoreKeepsOnlyAxonAnnotations(t *testing.T) {
	s := store{dir: t.TempDir(), log: slog.New(slog.DiscardHandler)}
	ep := &datapathv1alpha1.Endpoint{Annotations: map[string]string{
		"ipam.axon.io/pool": "blue", "axon.io/x": "1", "example.com/blob": strings.Repeat("a", 1<<20), "axon.io.example.com/y": "2", "noslash": "3",
	}}
	raw, err := protojson.Marshal(ep)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.save("lxc00000000000a", &record{Endpoint: raw}); err != nil {
		t.Fatal(err)
	}
	_, got, err := s.load("lxc00000000000a")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ipam.axon.io/pool": "blue", "axon.io/x": "1"}
	if !maps.Equal(got.GetAnnotations(), want) {
		t.Errorf("annotations %v, want %v", got.GetAnnotations(), want)
	}
}
