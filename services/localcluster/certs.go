package localcluster

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/axon-cni/axon/services/internal/pki"
)

// certValidity is how long the local system's certificates are valid: each
// run makes new ones, so a short life costs nothing.
const certValidity = 7 * 24 * time.Hour

// etcdCert names the embedded etcd's certificate among the services'.
const etcdCert = "etcd"

// clientName is the common name of the certificate for people and tools
// (axonctl, grpcurl) and of the run's own health checks.
const clientName = "axonctl"

// keyPair is a certificate file and its key's file.
type keyPair struct{ cert, key string }

// certs are the local system's mTLS files, made fresh by every run in the
// state directory's pki/ (mode 0700; keys 0600). The CA's key is never
// written: nothing can be signed after the run has started.
type certs struct {
	dir string
	ca  string
	// services are the certificates of the control-plane services and of
	// etcd (etcdCert), valid as servers (for host) and as clients (a
	// service calling another, or etcd).
	services map[string]keyPair
	// client is the certificate for axonctl and grpcurl.
	client keyPair
}

// makeCerts creates a CA in dir, a certificate for each of services and one
// for clients; host is the address the services listen on, which the
// server certificates name besides loopback.
func makeCerts(dir, host string, services []string) (certs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return certs{}, fmt.Errorf("create certificate directory: %w", err)
	}
	// MkdirAll keeps the mode of a directory that exists.
	if err := os.Chmod(dir, 0o700); err != nil {
		return certs{}, fmt.Errorf("certificate directory: %w", err)
	}
	ca, err := pki.NewCA("axon-local CA", certValidity)
	if err != nil {
		return certs{}, err
	}
	c := certs{dir: dir, ca: filepath.Join(dir, "ca.pem"), services: map[string]keyPair{}}
	if err := pki.WriteFile(c.ca, ca.CertPEM()); err != nil {
		return certs{}, err
	}
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if host != "" && !slices.Contains(hosts, host) {
		hosts = append(hosts, host)
	}
	for _, s := range services {
		cert, key, err := ca.IssueFiles(dir, s, pki.Request{
			Name:     "axon-" + s,
			Usages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			Hosts:    hosts,
			Validity: certValidity,
		})
		if err != nil {
			return certs{}, err
		}
		c.services[s] = keyPair{cert: cert, key: key}
	}
	cert, key, err := ca.IssueFiles(dir, "client", pki.Request{
		Name: clientName, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: certValidity,
	})
	if err != nil {
		return certs{}, err
	}
	c.client = keyPair{cert: cert, key: key}
	return c, nil
}

// serverArgs are the flags that make service s serve its TCP API with mTLS.
func (c certs) serverArgs(s string) []string {
	kp := c.services[s]
	return []string{"--tls-cert", kp.cert, "--tls-key", kp.key, "--tls-client-ca", c.ca}
}
