package healthcheck_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"testing"

	"github.com/axon-cni/axon/services/datapath/healthcheck"
)

// freePort returns a TCP port of 127.0.0.1 nothing listens on.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func get(t *testing.T, port uint16) (int, map[string]any, error) {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) + "/healthz")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return resp.StatusCode, body, nil
}

// TestServers opens, updates and closes health check ports: 200 with local
// endpoints, 503 without, kube-proxy's body; a port taken by another
// process is an error that does not stop the others.
func TestServers(t *testing.T) {
	s := healthcheck.New([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = s.Close() })
	p1, p2 := freePort(t), freePort(t)
	for _, tc := range []struct {
		name  string
		want  map[uint16]healthcheck.Service
		codes map[uint16]int // 0: closed
		eps   map[uint16]float64
	}{
		{"open", map[uint16]healthcheck.Service{
			p1: {Namespace: "default", Name: "web", LocalEndpoints: 2},
			p2: {Namespace: "shop", Name: "cart"},
		}, map[uint16]int{p1: 200, p2: 503}, map[uint16]float64{p1: 2, p2: 0}},
		{"update", map[uint16]healthcheck.Service{
			p1: {Namespace: "default", Name: "web"},
			p2: {Namespace: "shop", Name: "cart", LocalEndpoints: 1},
		}, map[uint16]int{p1: 503, p2: 200}, map[uint16]float64{p1: 0, p2: 1}},
		{"close one", map[uint16]healthcheck.Service{
			p2: {Namespace: "shop", Name: "cart", LocalEndpoints: 1},
		}, map[uint16]int{p1: 0, p2: 200}, map[uint16]float64{p2: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Sync(tc.want); err != nil {
				t.Fatal(err)
			}
			for port, code := range tc.codes {
				got, body, err := get(t, port)
				if code == 0 {
					if !errors.Is(err, syscall.ECONNREFUSED) {
						t.Errorf("port %d: %d, %v; want refused", port, got, err)
					}
					continue
				}
				if err != nil || got != code {
					t.Fatalf("port %d: %d, %v; want %d", port, got, err, code)
				}
				svc, _ := body["service"].(map[string]any)
				if svc["namespace"] != tc.want[port].Namespace || svc["name"] != tc.want[port].Name || body["localEndpoints"] != tc.eps[port] {
					t.Errorf("port %d: body %v", port, body)
				}
			}
		})
	}

	// A port held by another listener.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	taken := uint16(l.Addr().(*net.TCPAddr).Port)
	err = s.Sync(map[uint16]healthcheck.Service{taken: {Name: "a"}, p1: {Name: "b", LocalEndpoints: 1}})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Sync with a taken port: %v, want EADDRINUSE", err)
	}
	if code, _, err := get(t, p1); err != nil || code != 200 {
		t.Errorf("port %d beside the taken one: %d, %v", p1, code, err)
	}
}
