package localsys

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestWriteReadRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if _, err := Read(path); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read() before Write = %v, want %v", err, ErrNotFound)
	}
	want := System{
		Services:  map[string]string{"ipam": "127.0.0.1:9401"},
		Datapaths: []string{"unix:///x/node-1/datapath.sock"},
		TLS:       TLS{CA: "/x/pki/ca.pem", Cert: "/x/pki/client.pem", Key: "/x/pki/client.key"},
	}
	for range 2 { // the second replaces the first
		if err := Write(path, want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Read() = %+v, want %+v", got, want)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only %s", len(entries), FileName)
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Read() of a broken file = %v, want a decoding error", err)
	}
	for range 2 { // removing what is gone is fine
		if err := Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Read(path); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read() after Remove = %v, want %v", err, ErrNotFound)
	}
}
