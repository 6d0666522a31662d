// Package localsys describes a running single-machine Axon system: what
// axon-local writes into its state directory so that axonctl finds the
// services, the datapaths' sockets and the client certificate by itself.
package localsys

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FileName is the description's file name in axon-local's state directory.
const FileName = "local.json"

// System is where the services of a local system listen and which
// certificates reach them.
type System struct {
	// Services maps a service's short name ("ipam") to its gRPC target.
	Services map[string]string `json:"services"`
	// Datapaths are the gRPC targets (unix://...) of the nodes' datapaths.
	Datapaths []string `json:"datapaths,omitempty"`
	// TLS is the client side of the services' mTLS.
	TLS TLS `json:"tls"`
}

// TLS names the PEM files a client of the local system's TCP services uses.
type TLS struct {
	// CA verifies the services' certificates.
	CA string `json:"ca"`
	// Cert and Key are the client certificate and its key.
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// ErrNotFound is returned by [Read] when no description exists at path.
var ErrNotFound = errors.New("no local system description")

// Write writes s to path, replacing a previous description at once (a
// reader sees the old one or the new one, never a part).
func Write(path string, s System) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode local system description: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+FileName+".*")
	if err != nil {
		return fmt.Errorf("write local system description: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// It names files, it holds no secret: others may read it.
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write local system description %s: %w", path, err)
	}
	return nil
}

// Read reads the description at path; [ErrNotFound] when there is none.
func Read(path string) (System, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return System{}, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	if err != nil {
		return System{}, fmt.Errorf("read local system description: %w", err)
	}
	var s System
	if err := json.Unmarshal(data, &s); err != nil {
		return System{}, fmt.Errorf("local system description %s: %w", path, err)
	}
	return s, nil
}

// Remove removes the description at path, if any: a stopped system is no
// longer there to be found.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove local system description: %w", err)
	}
	return nil
}
