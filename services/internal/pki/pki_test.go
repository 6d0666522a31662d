package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tests := []struct {
		name    string
		req     Request
		host    string // verified as a server name when set
		usage   []x509.ExtKeyUsage
		wantErr bool
	}{
		{name: "server by IPv4", req: Request{Name: "s", Usages: server, Hosts: []string{"127.0.0.1", "::1", "localhost"}}, host: "127.0.0.1", usage: server},
		{name: "server by IPv6", req: Request{Name: "s", Usages: server, Hosts: []string{"127.0.0.1", "::1", "localhost"}}, host: "::1", usage: server},
		{name: "server by name", req: Request{Name: "s", Usages: server, Hosts: []string{"127.0.0.1", "::1", "localhost"}}, host: "localhost", usage: server},
		{name: "server for another host", req: Request{Name: "s", Usages: server, Hosts: []string{"127.0.0.1"}}, host: "10.0.0.1", usage: server, wantErr: true},
		{name: "client", req: Request{Name: "c", Usages: client}, usage: client},
		{name: "client cert as a server", req: Request{Name: "c", Usages: client, Hosts: []string{"127.0.0.1"}}, host: "127.0.0.1", usage: server, wantErr: true},
		{name: "service: both", req: Request{Name: "b", Usages: both, Hosts: []string{"127.0.0.1"}}, usage: client},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Validity = time.Hour
			certPEM, keyPEM, err := ca.Issue(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "EC PRIVATE KEY" {
				t.Fatalf("key is not a PEM EC private key")
			}
			b, _ := pem.Decode(certPEM)
			if b == nil {
				t.Fatal("certificate is not PEM")
			}
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.host, KeyUsages: tt.usage})
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("Verify() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestIssueBounds(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue(Request{Name: "x", Validity: time.Hour}); !errors.Is(err, ErrNoUsage) {
		t.Errorf("Issue without usage = %v, want %v", err, ErrNoUsage)
	}
	certFile, keyFile, err := ca.IssueFiles(t.TempDir(), "long", Request{Name: "long", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 600", f, fi.Mode().Perm())
		}
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate valid until %s, past its CA's %s", cert.NotAfter, ca.Cert.NotAfter)
	}
}
