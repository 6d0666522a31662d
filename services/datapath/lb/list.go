package lb

import (
	"encoding/hex"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

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

// List returns a page of services in (address, port, protocol) order and
// the key of its last one when more follow ("" on the last page).
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
	var next string
	if len(fes) > q.Limit {
		fes = fes[:q.Limit]
		next = keyOf(fes[q.Limit-1])
	}
	out := make([]*datapathv1alpha1.Service, len(fes))
	for i, fe := range fes {
		out[i] = proto.CloneOf(m.services[fe].svc)
	}
	return out, next, nil
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
