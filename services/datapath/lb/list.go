package lb

import (
	"encoding/hex"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// MaxPageBytes bounds a page of List: a page ends before the service that
// would take it past this size (every page holds at least one), so a
// ListServices response stays under gRPC's 4 MiB message limit. The
// largest service validation allows (4096 backends with the longest node
// names and zones) is about 1.5 MiB.
const MaxPageBytes = 3 << 20

// Query selects a page of services.
type Query struct {
	// Namespace and Name keep only services of that Kubernetes Service;
	// empty for all. Name needs Namespace.
	Namespace, Name string
	// Type keeps only frontends of that type; UNSPECIFIED for all.
	Type datapathv1alpha1.ServiceType
	// After is the key of the last service of the previous page ("" for
	// the first page), as List returned it.
	After string
	// Limit is the page's size; positive.
	Limit int
}

// List returns a page of services in (address, port, protocol) order, at
// most q.Limit and MaxPageBytes, and the key of its last one when more
// follow ("" on the last page).
func (m *Manager) List(q Query) ([]*datapathv1alpha1.Service, string, error) {
	if q.Name != "" && q.Namespace == "" {
		return nil, "", fmt.Errorf("%w: service_name needs service_namespace", ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, "", err
	}
	fes := make([]frontend, 0, len(m.services))
	for fe, r := range m.services {
		svc := r.svc
		if (q.Namespace != "" && svc.GetServiceNamespace() != q.Namespace) ||
			(q.Name != "" && svc.GetServiceName() != q.Name) ||
			(q.Type != datapathv1alpha1.ServiceType_SERVICE_TYPE_UNSPECIFIED && svc.GetType() != q.Type) ||
			(q.After != "" && keyOf(fe) <= q.After) {
			continue
		}
		fes = append(fes, fe)
	}
	slices.SortFunc(fes, compareFrontend)
	var out []*datapathv1alpha1.Service
	size := 0
	for i, fe := range fes {
		svc := m.services[fe].svc
		size += proto.Size(svc)
		if i == q.Limit || (i > 0 && size > MaxPageBytes) {
			return out, keyOf(fes[i-1]), nil
		}
		out = append(out, proto.CloneOf(svc))
	}
	return out, "", nil
}

// keyOf is a frontend's key in page tokens: strings that sort as
// compareFrontend does (IPv4 first; addresses, ports and protocols in
// fixed-width hex).
func keyOf(fe frontend) string {
	family := "6"
	if fe.addr.Is4() {
		family = "4"
	}
	return fmt.Sprintf("%s%s/%04x/%02x", family, hex.EncodeToString(fe.addr.AsSlice()), fe.port, fe.proto)
}
