package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is what every service daemon is configured with.
type Config struct {
	// GRPCAddr is the TCP address the gRPC server listens on, or fd:N for a
	// listening TCP socket inherited as file descriptor N; empty disables TCP.
	GRPCAddr string
	// UnixSocket is a unix socket path the gRPC server also listens on; empty disables it.
	UnixSocket string
	// MetricsAddr is the address of the Prometheus /metrics endpoint (or
	// fd:N, as GRPCAddr); empty disables it.
	MetricsAddr string
	// TLSCertFile and TLSKeyFile enable TLS on the TCP listener when both are set.
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile, when set, requires client certificates signed by this CA (mTLS).
	TLSClientCAFile string
	// Insecure allows a TCP listener without mTLS: plaintext, open to
	// anyone who reaches the address. Without it a TCP listener needs
	// TLSCertFile, TLSKeyFile and TLSClientCAFile.
	Insecure bool
	// ShutdownTimeout bounds graceful shutdown before in-flight RPCs are cut.
	ShutdownTimeout time.Duration
	// HealthInterval is how often dependency health checks run.
	HealthInterval time.Duration
	// LogLevel is one of debug, info, warn, error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string
	// MaxRecvMsgSize is the largest request accepted, in bytes; 0 keeps
	// gRPC's default (4 MiB). Not a flag: the service's Spec sets it.
	MaxRecvMsgSize int
}

// Defaults are the per-service default listen addresses.
type Defaults struct {
	GRPCAddr    string
	UnixSocket  string
	MetricsAddr string
}

// RegisterFlags adds the common daemon flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet, d Defaults) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", d.GRPCAddr, "TCP `address` of the gRPC API, or fd:N for a listening socket inherited as file descriptor N; empty disables TCP")
	fs.StringVar(&c.UnixSocket, "grpc-socket", d.UnixSocket, "unix socket `path` of the gRPC API (mode 0600); empty disables it")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", d.MetricsAddr, "`address` of the Prometheus /metrics endpoint, or fd:N as --grpc-addr; empty disables it")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "PEM server certificate `file` for the TCP gRPC listener")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca", "", "PEM CA `file`; clients must present a certificate it signed (mTLS)")
	fs.BoolVar(&c.Insecure, "insecure", false, "serve --grpc-addr as plaintext, without TLS or client certificates: anyone who reaches it can call every RPC (explicit opt-in)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long graceful shutdown waits for in-flight RPCs")
	fs.DurationVar(&c.HealthInterval, "health-interval", 2*time.Second, "how often dependency health checks run")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log `format`: text or json")
}

// Validate reports the first inconsistency in c.
func (c *Config) Validate() error {
	if c.GRPCAddr == "" && c.UnixSocket == "" {
		return errors.New("one of --grpc-addr or --grpc-socket is required")
	}
	grpcFD, grpcInherited, err := inheritedFD(c.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	metricsFD, metricsInherited, err := inheritedFD(c.MetricsAddr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	if grpcInherited && metricsInherited && grpcFD == metricsFD {
		return fmt.Errorf("--grpc-addr and --metrics-addr name the same inherited socket (fd:%d)", grpcFD)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key must be given together")
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		return errors.New("--tls-client-ca requires --tls-cert and --tls-key")
	}
	if c.Insecure && c.TLSCertFile != "" {
		return errors.New("--insecure and --tls-* exclude each other")
	}
	if c.GRPCAddr != "" && !c.Insecure && c.TLSClientCAFile == "" {
		return fmt.Errorf("--grpc-addr %s: %w", c.GRPCAddr, ErrTCPWithoutMTLS)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout must be positive, got %s", c.ShutdownTimeout)
	}
	if c.HealthInterval <= 0 {
		return fmt.Errorf("--health-interval must be positive, got %s", c.HealthInterval)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, got %q", c.LogFormat)
	}
	return nil
}

// ErrTCPWithoutMTLS is returned by [Config.Validate] for a TCP listener
// that does not require client certificates and is not --insecure.
var ErrTCPWithoutMTLS = errors.New("a TCP listener needs mTLS: --tls-cert, --tls-key and --tls-client-ca (or --insecure for plaintext, or listen on --grpc-socket only)")

// PlaintextTCP reports whether c serves gRPC over TCP without TLS.
func (c *Config) PlaintextTCP() bool { return c.GRPCAddr != "" && c.Insecure }

// NewLogger returns the logger c describes, writing to w.
func (c *Config) NewLogger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// ParseFlags parses args into fs, then fills every flag not given on the
// command line from the environment variable envPrefix + "_" + the flag name
// in upper case with dashes as underscores (AXON_IPAM_GRPC_ADDR for
// --grpc-addr). Command-line flags win over the environment.
func ParseFlags(fs *flag.FlagSet, args []string, envPrefix string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		key := EnvName(envPrefix, f.Name)
		v, ok := os.LookupEnv(key)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s=%q: %w", key, v, err))
		}
	})
	return errors.Join(errs...)
}

// EnvName is the environment variable that overrides flag name.
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// inheritedPrefix marks a listen address that names a listening socket the
// parent process opened and passed down, so that a supervisor (axon-local,
// tests) can hand out free ports without racing other processes for them.
const inheritedPrefix = "fd:"

// inheritedFD parses an fd:N listen address. ok is false for an ordinary
// address. Descriptors 0 to 2 are the standard streams, never a socket.
func inheritedFD(addr string) (fd int, ok bool, err error) {
	s, ok := strings.CutPrefix(addr, inheritedPrefix)
	if !ok {
		return 0, false, nil
	}
	fd, err = strconv.Atoi(s)
	if err != nil || fd < 3 {
		return 0, true, fmt.Errorf("inherited socket %q: want fd:N with N a file descriptor of 3 or more", addr)
	}
	return fd, true, nil
}
