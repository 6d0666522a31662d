package etcdclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// pki is a test certificate authority that writes its certificate and the
// ones it issues (for 127.0.0.1) as PEM files under dir.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "axon test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: t.TempDir(), caCert: cert, caKey: key}
	writePEM(t, filepath.Join(p.dir, "ca.crt"), "CERTIFICATE", der)
	return p
}

func (p *pki) ca() string { return filepath.Join(p.dir, "ca.crt") }

// issue writes name.crt and name.key, a certificate for usage.
func (p *pki) issue(t *testing.T, name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

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
	p := newPKI(t)
	srvCert, srvKey := p.issue(t, "etcd", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := p.issue(t, "axon-ipam", 3, x509.ExtKeyUsageClientAuth)

	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client, peer := freeURL(t, "https"), freeURL(t, "http")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = srvCert, srvKey
	cfg.ClientTLSInfo.TrustedCAFile = p.ca()
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

	other := newPKI(t)
	otherCert, otherKey := other.issue(t, "stranger", 2, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"client certificate of etcd's CA", Config{CertFile: cliCert, KeyFile: cliKey, CAFile: p.ca()}, true},
		{"no client certificate", Config{CAFile: p.ca()}, false},
		{"client certificate of another CA", Config{CertFile: otherCert, KeyFile: otherKey, CAFile: p.ca()}, false},
		{"server not trusted", Config{CertFile: cliCert, KeyFile: cliKey, CAFile: other.ca()}, false},
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
