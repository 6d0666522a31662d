package lb

import (
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

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
	var after frontend
	if q.After != "" {
		var ok bool
		if after, ok = parseKey(q.After); !ok {
			return nil, "", fmt.Errorf("%w: not a page's last key", ErrInvalid)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, "", err
	}
	order := m.order()
	start := 0
	if q.After != "" {
		start, _ = slices.BinarySearchFunc(order, after, compareFrontend)
		if start < len(order) && order[start] == after {
			start++
		}
	}
	var out []*datapathv1alpha1.Service
	size := 0
	var last frontend
	for _, fe := range order[start:] {
		svc := m.services[fe].svc
		if (q.Namespace != "" && svc.GetServiceNamespace() != q.Namespace) ||
			(q.Name != "" && svc.GetServiceName() != q.Name) ||
			(q.Type != datapathv1alpha1.ServiceType_SERVICE_TYPE_UNSPECIFIED && svc.GetType() != q.Type) {
			continue
		}
		size += proto.Size(svc)
		if len(out) == q.Limit || (len(out) > 0 && size > MaxPageBytes) {
			return out, keyOf(last), nil
		}
		out = append(out, proto.CloneOf(svc))
		last = fe
	}
	return out, "", nil
}

// order returns the frontends in list order, sorting them again after a
// change of the set. Caller holds m.mu.
func (m *Manager) order() []frontend {
	if m.sorted == nil {
		m.sorted = slices.SortedFunc(maps.Keys(m.services), compareFrontend)
	}
	return m.sorted
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

// parseKey is keyOf's inverse; false for a string keyOf never returns.
func parseKey(s string) (frontend, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || len(parts[0]) < 1 || len(parts[1]) != 4 || len(parts[2]) != 2 {
		return frontend{}, false
	}
	b, err := hex.DecodeString(parts[0][1:])
	addr, ok := netip.AddrFromSlice(b)
	if err != nil || !ok || (parts[0][0] == '4') != addr.Is4() || parts[0][0] != '4' && parts[0][0] != '6' {
		return frontend{}, false
	}
	port, err1 := strconv.ParseUint(parts[1], 16, 16)
	proto, err2 := strconv.ParseUint(parts[2], 16, 8)
	if err1 != nil || err2 != nil {
		return frontend{}, false
	}
	return frontend{addr: addr, port: uint16(port), proto: uint8(proto)}, true
}
