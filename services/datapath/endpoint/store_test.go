package endpoint

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
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
