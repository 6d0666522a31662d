package daemon

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
)

// ErrClientTLSRequired is returned by [ClientTLS.Credentials] for a TCP
// target with neither TLS files nor an explicit plaintext opt-in.
var ErrClientTLSRequired = errors.New("a TCP target needs TLS or an explicit plaintext opt-in")

// ClientTLS is how a service dials another service's gRPC API over TCP:
// the PEM files a server's --tls-client-ca accepts, or plaintext when
// asked for by name. Unix socket targets need neither: the socket's file
// mode guards them.
type ClientTLS struct {
	// Peer names the service dialed ("ipam"); it prefixes the flags.
	Peer string
	// CAFile verifies the server's certificate.
	CAFile string
	// CertFile and KeyFile are this client's certificate (for mTLS).
	CertFile, KeyFile string
	// Plaintext dials TCP without TLS.
	Plaintext bool
}

// RegisterFlags adds --<peer>-tls-ca, --<peer>-tls-cert, --<peer>-tls-key
// and --<peer>-plaintext to fs.
func (c *ClientTLS) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CAFile, c.Peer+"-tls-ca", "", "PEM CA `file` that signed axon-"+c.Peer+"'s certificate; enables TLS to a TCP target")
	fs.StringVar(&c.CertFile, c.Peer+"-tls-cert", "", "PEM client certificate `file` presented to axon-"+c.Peer+" (mTLS)")
	fs.StringVar(&c.KeyFile, c.Peer+"-tls-key", "", "PEM private key `file` for --"+c.Peer+"-tls-cert")
	fs.BoolVar(&c.Plaintext, c.Peer+"-plaintext", false, "dial a TCP target of axon-"+c.Peer+" without TLS (explicit opt-in)")
}

// Credentials returns the transport credentials for dialing target, or a
// [UsageError] when the flags do not fit it.
func (c *ClientTLS) Credentials(target string) (credentials.TransportCredentials, error) {
	flagTLS := "--" + c.Peer + "-tls-"
	flagPlain := "--" + c.Peer + "-plaintext"
	usage := func(err error) error { return &UsageError{Err: err} }
	useTLS := c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	switch {
	case useTLS && c.Plaintext:
		return nil, usage(fmt.Errorf("%s and %s* exclude each other", flagPlain, flagTLS))
	case (c.CertFile == "") != (c.KeyFile == ""):
		return nil, usage(fmt.Errorf("%scert and %skey must be given together", flagTLS, flagTLS))
	case useTLS && c.CAFile == "":
		return nil, usage(fmt.Errorf("%scert needs %sca to verify the server", flagTLS, flagTLS))
	}
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		if useTLS || c.Plaintext {
			// The servers' unix listeners never speak TLS: flags here are a
			// mistake worth reporting, not ignoring.
			return nil, usage(fmt.Errorf("%s is a unix socket: %s* and %s apply to TCP targets only", target, flagTLS, flagPlain))
		}
		return local.NewCredentials(), nil
	}
	if c.Plaintext {
		return insecure.NewCredentials(), nil
	}
	if !useTLS {
		return nil, usage(fmt.Errorf("target %s: %w: give %sca (and %scert, %skey for mTLS) or %s", target, ErrClientTLSRequired, flagTLS, flagTLS, flagTLS, flagPlain))
	}
	tc, err := ClientTLSConfig(c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s*: %w", flagTLS, err)
	}
	return credentials.NewTLS(tc), nil
}

// ClientTLSConfig is the TLS configuration of a client that verifies
// servers with the CA in caFile and, when certFile and keyFile are set,
// presents that certificate (mTLS).
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCertPool(caFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client key pair %s, %s: %w", certFile, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
