// Package testpki is a certificate authority for tests: it issues
// short-lived ECDSA certificates for 127.0.0.1 and writes them as PEM files.
package testpki

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/axon-cni/axon/services/internal/pki"
)

// validity is how long test certificates are valid.
const validity = time.Hour

// CA is a test certificate authority.
type CA struct {
	// Cert is the CA's own certificate.
	Cert *x509.Certificate
	ca   *pki.CA
}

// New returns a fresh CA valid for an hour.
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := pki.NewCA("axon test CA", validity)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: ca.Cert, ca: ca}
}

// WriteCert writes the CA's certificate to dir/name and returns its path.
func (ca *CA) WriteCert(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := pki.WriteFile(path, ca.ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	return path
}

// Issue writes dir/name.pem and dir/name.key: a certificate for 127.0.0.1
// with the extended key usage usage, signed by ca, and its key.
func (ca *CA) Issue(t testing.TB, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := ca.ca.IssueFiles(dir, name, pki.Request{
		Name: name, Usages: []x509.ExtKeyUsage{usage}, Hosts: []string{"127.0.0.1"}, Validity: validity,
	})
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
