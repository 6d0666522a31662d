package embedetcd

import (
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartOnATakenPortFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Start(Config{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: l.Addr().String()})
	if err == nil {
		s.Close()
		t.Fatal("Start on a port in use succeeded")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Start() = %v, want address already in use", err)
	}
}

func TestStartOnFreePortsServes(t *testing.T) {
	s, err := Start(Config{Dir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.ClientURL(), "http://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Errorf("ClientURL() = %q, want a chosen loopback port", s.ClientURL())
	}
}

func TestIsPortZero(t *testing.T) {
	for addr, want := range map[string]bool{
		"":               true,
		"127.0.0.1:0":    true,
		"[::1]:0":        true,
		"127.0.0.1:2379": false,
		"garbage":        false,
	} {
		if got := isPortZero(addr); got != want {
			t.Errorf("isPortZero(%q) = %v, want %v", addr, got, want)
		}
	}
}

// A port chosen free and taken by someone else before etcd listens on it
// makes Start try again on fresh ports.
func TestStartRetriesAPortTakenMeanwhile(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	s, err := Start(Config{
		Dir: filepath.Join(t.TempDir(), "etcd"),
		listenURL: func(addr string) (url.URL, error) {
			calls++
			if calls == 1 { // the first client port: lost to another listener
				return url.URL{Scheme: "http", Host: taken.Addr().String()}, nil
			}
			return listenURL(addr)
		},
	})
	if err != nil {
		t.Fatalf("Start() = %v, want a start on fresh ports", err)
	}
	defer s.Close()
	if calls != 4 || strings.HasSuffix(s.ClientURL(), taken.Addr().String()) {
		t.Errorf("ports resolved %d times (want 4: two starts), client URL %s", calls, s.ClientURL())
	}
}
