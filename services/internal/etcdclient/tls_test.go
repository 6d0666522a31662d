package etcdclient

import (
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/axon-cni/axon/services/internal/testpki"
)

// freeURL is a loopback URL with a port free now.
func freeURL(t *testing.T, scheme string) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.URL{Scheme: scheme, Host: addr}
}

// TestTLSClientCertificates runs etcd as production does with TLS: it
// serves HTTPS and requires client certificates signed by its CA. The
// client built from --etcd-cert/--etcd-key/--etcd-ca reads and writes; one
// without a client certificate, or trusting another CA, is refused.
func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	caFile := ca.WriteCert(t, dir, "ca.pem")
	srvCert, srvKey := ca.Issue(t, dir, "etcd", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, dir, "axon-ipam", x509.ExtKeyUsageClientAuth)

	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client, peer := freeURL(t, "https"), freeURL(t, "http")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = srvCert, srvKey
	cfg.ClientTLSInfo.TrustedCAFile = caFile
	cfg.ClientTLSInfo.ClientCertAuth = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}

	otherDir := t.TempDir()
	other := testpki.New(t)
	otherCA := other.WriteCert(t, otherDir, "ca.pem")
	otherCert, otherKey := other.Issue(t, otherDir, "stranger", x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"client certificate of etcd's CA", Config{CertFile: cliCert, KeyFile: cliKey, CAFile: caFile}, true},
		{"no client certificate", Config{CAFile: caFile}, false},
		{"client certificate of another CA", Config{CertFile: otherCert, KeyFile: otherKey, CAFile: caFile}, false},
		{"server not trusted", Config{CertFile: cliCert, KeyFile: cliKey, CAFile: otherCA}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints, tc.cfg.DialTimeout = client.String(), 2*time.Second
			cli, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
			wait := 3 * time.Second
			if !tc.ok {
				wait = time.Second // a refused handshake only ever times out
			}
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()
			_, err = cli.Put(ctx, "/tls-test", "v")
			if tc.ok && err != nil {
				t.Fatalf("Put = %v, want success", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("Put succeeded, want the connection refused")
			}
		})
	}
}
