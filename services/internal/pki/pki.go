// Package pki is a small certificate authority: ECDSA P-256 keys, a
// self-signed CA and the server and client certificates it signs, as PEM.
// The single-machine system (axon-local) makes its mTLS certificates with
// it, and tests theirs; a production cluster brings its own CA.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// backdate is how far before now certificates become valid, for clocks
// that differ a little.
const backdate = time.Hour

// CA is a certificate authority whose key lives only in memory.
type CA struct {
	// Cert is the CA's own certificate.
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA returns a fresh CA named name, valid for validity from now.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-backdate), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

// CertPEM is the CA's certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Request describes a certificate to issue.
type Request struct {
	// Name is the subject's common name ("axon-ipam", "axonctl").
	Name string
	// Usages are the extended key usages: x509.ExtKeyUsageServerAuth for
	// a server, x509.ExtKeyUsageClientAuth for a client, both for a
	// service that also calls others.
	Usages []x509.ExtKeyUsage
	// Hosts are the IP addresses and DNS names a server certificate is
	// valid for.
	Hosts []string
	// Validity is how long it is valid from now; never past the CA's end.
	Validity time.Duration
}

// ErrNoUsage is returned by [CA.Issue] for a request without a key usage.
var ErrNoUsage = errors.New("a certificate needs an extended key usage")

// Issue signs a certificate for r and returns it and its new private key,
// both PEM encoded.
func (ca *CA) Issue(r Request) (certPEM, keyPEM []byte, err error) {
	if len(r.Usages) == 0 {
		return nil, nil, fmt.Errorf("certificate %q: %w", r.Name, ErrNoUsage)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key of %q: %w", r.Name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: r.Name},
		NotBefore: now.Add(-backdate), NotAfter: now.Add(r.Validity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: r.Usages,
	}
	if ca.Cert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	for _, h := range r.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %q: %w", r.Name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key of %q: %w", r.Name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// IssueFiles issues a certificate for r and writes it to dir/name.pem and
// its key to dir/name.key (mode 0600), returning the two paths.
func (ca *CA) IssueFiles(dir, name string, r Request) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := ca.Issue(r)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := WriteFile(keyFile, keyPEM); err != nil {
		return "", "", err
	}
	if err := WriteFile(certFile, certPEM); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// WriteFile writes data to path with mode 0600, replacing what is there.
func WriteFile(path string, data []byte) error {
	// Remove first: WriteFile keeps the mode of an existing file.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return n, nil
}
