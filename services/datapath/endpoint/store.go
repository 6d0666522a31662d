package endpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/statefile"
)

// record is what the agent keeps on disk for one endpoint, so a restarted
// agent knows every endpoint it wired and the IPAM allocation behind it.
type record struct {
	Endpoint json.RawMessage `json:"endpoint"` // protojson of datapathv1alpha1.Endpoint
	// IPAMSequence guards the release of the endpoint's addresses.
	IPAMSequence uint64 `json:"ipamSequence"`
	HostMAC      string `json:"hostMAC"`
	PodMAC       string `json:"podMAC"`
	// PodKey is the pod's key in the device map (podKeys); 0 in records
	// of earlier versions.
	PodKey uint32 `json:"podKey,omitempty"`
}

// store keeps records as one JSON file per endpoint, written atomically.
type store struct {
	dir string
	log *slog.Logger
}

func (s store) path(hostName string) string { return filepath.Join(s.dir, hostName+".json") }

func (s store) save(hostName string, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := statefile.WriteAtomic(s.path(hostName), b); err != nil {
		return fmt.Errorf("write endpoint record: %w", err)
	}
	return nil
}

func (s store) load(hostName string) (*record, *datapathv1alpha1.Endpoint, error) {
	b, err := os.ReadFile(s.path(hostName))
	if err != nil {
		return nil, nil, err
	}
	return decodeRecord(b)
}

func decodeRecord(b []byte) (*record, *datapathv1alpha1.Endpoint, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, nil, fmt.Errorf("decode endpoint record: %w", err)
	}
	ep := &datapathv1alpha1.Endpoint{}
	if err := protojson.Unmarshal(r.Endpoint, ep); err != nil {
		return nil, nil, fmt.Errorf("decode endpoint: %w", err)
	}
	// Records of earlier versions hold every annotation of the pod.
	ep.Annotations = keptAnnotations(ep.GetAnnotations())
	return &r, ep, nil
}

func (s store) remove(hostName string) error {
	if err := os.Remove(s.path(hostName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// list returns every stored endpoint by host interface name.
func (s store) list() (map[string]*datapathv1alpha1.Endpoint, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list endpoint records: %w", err)
	}
	out := map[string]*datapathv1alpha1.Endpoint{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		_, ep, err := s.load(name)
		if err != nil {
			// A record damaged by a power loss must not keep the agent
			// from starting: it is set aside, and its pod (gone with the
			// node's reboot, or answered by the runtime's next DEL or GC)
			// handled without it.
			s.log.Error("setting an unreadable endpoint record aside", "record", e.Name(), "err", err)
			_ = os.Rename(filepath.Join(s.dir, e.Name()), filepath.Join(s.dir, e.Name()+".bad"))
			continue
		}
		out[name] = ep
	}
	return out, nil
}
