package embedetcd

import (
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/etcdclient"
	"github.com/axon-cni/axon/services/internal/testpki"
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

// TestStartWithTLSRequiresClientCertificates checks the member axon-local
// runs: https for clients and peers, and only for certificates of its CA.
func TestStartWithTLSRequiresClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	srvCert, srvKey := ca.Issue(t, dir, "etcd", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := ca.WriteCert(t, dir, "ca.pem")
	s, err := Start(Config{Dir: filepath.Join(dir, "etcd"), TLS: &TLS{CertFile: srvCert, KeyFile: srvKey, CAFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !strings.HasPrefix(s.ClientURL(), "https://") {
		t.Errorf("ClientURL() = %q, want https", s.ClientURL())
	}
	for _, tc := range []struct {
		name string
		cfg  etcdclient.Config
		ok   bool
	}{
		{name: "client certificate", cfg: etcdclient.Config{CertFile: cliCert, KeyFile: cliKey, CAFile: caFile}, ok: true},
		{name: "no client certificate", cfg: etcdclient.Config{CAFile: caFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints, tc.cfg.DialTimeout = s.ClientURL(), 2*time.Second
			cli, err := etcdclient.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, err = cli.Put(ctx, "/tls-test", "v")
			if (err == nil) != tc.ok {
				t.Fatalf("Put() = %v, want success %v", err, tc.ok)
			}
		})
	}
}
