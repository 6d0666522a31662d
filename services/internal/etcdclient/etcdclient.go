// Package etcdclient connects a service to etcd from command-line flags and
// reports etcd's health to the daemon's health checks.
package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/axon-cni/axon/services/internal/daemon"
)

// Config says how to reach etcd.
type Config struct {
	// Endpoints are etcd client URLs, comma-separated on the command line.
	Endpoints string
	// CertFile, KeyFile and CAFile configure TLS to etcd when set.
	CertFile, KeyFile, CAFile string
	// DialTimeout bounds the first connection.
	DialTimeout time.Duration
}

// RegisterFlags adds the etcd flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd client `URLs`")
	fs.StringVar(&c.CertFile, "etcd-cert", "", "PEM client certificate `file` for etcd (TLS)")
	fs.StringVar(&c.KeyFile, "etcd-key", "", "PEM client key `file` for --etcd-cert")
	fs.StringVar(&c.CAFile, "etcd-ca", "", "PEM CA `file` that signed etcd's serving certificate")
	fs.DurationVar(&c.DialTimeout, "etcd-dial-timeout", 5*time.Second, "timeout of the first connection to etcd")
}

func (c *Config) endpoints() []string {
	var eps []string
	for e := range strings.SplitSeq(c.Endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CertFile == "" && c.KeyFile == "" && c.CAFile == "" {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("--etcd-cert and --etcd-key must be given together")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load etcd client key pair: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.CAFile != "" {
		pool, err := daemon.LoadCertPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// New returns a client for the etcd cluster c names. The client connects
// lazily; use [Check] to learn whether etcd answers.
func New(c Config) (*clientv3.Client, error) {
	eps := c.endpoints()
	if len(eps) == 0 {
		return nil, &daemon.UsageError{Err: errors.New("--etcd-endpoints is empty")}
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, &daemon.UsageError{Err: err}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: c.DialTimeout,
		TLS:         tc,
		// Axon logs through slog; etcd's zap output would be a second,
		// differently shaped log stream.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", eps, err)
	}
	return cli, nil
}

// Check returns a health check that passes while a linearizable read
// succeeds, which is what every write of ours needs too: a quorum.
func Check(cli *clientv3.Client) daemon.Check {
	return func(ctx context.Context) error {
		if _, err := cli.Get(ctx, "axon/health", clientv3.WithCountOnly()); err != nil {
			return fmt.Errorf("etcd quorum read: %w", err)
		}
		return nil
	}
}

// Attach connects d's service to etcd: the client's health becomes one of
// d's checks and the client closes when d shuts down.
func Attach(d *daemon.Daemon, c Config) (*clientv3.Client, error) {
	cli, err := New(c)
	if err != nil {
		return nil, err
	}
	d.AddCheck("etcd", Check(cli))
	d.OnShutdown(cli.Close)
	return cli, nil
}
