package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/services/internal/bounded"
)

// Log attribute keys shared by every service.
const (
	// LogKeyService names the service on every line it logs.
	LogKeyService = "service"
	// LogKeySubsys names the part of a service (its allocator, agent, ...).
	LogKeySubsys = "subsys"
	// LogKeyError carries an error.
	LogKeyError = "err"
)

// Spec describes one service binary to [Main] and [Run].
type Spec struct {
	// Name is the short service name ("ipam"); it names the metrics
	// subsystem, the log subsys and the environment prefix (AXON_IPAM_).
	Name string
	// Defaults are the service's default listen addresses.
	Defaults Defaults
	// Flags, if set, registers the service's own flags.
	Flags func(fs *flag.FlagSet)
	// TCPNeedsMTLS refuses --insecure with a TCP listener (--grpc-addr):
	// every TCP listener requires client certificates unless --insecure,
	// and for a service whose API changes the node not even then. Its
	// unix socket (file mode 0600) is the way for local clients.
	TCPNeedsMTLS bool
	// MaxRecvMsgSize is the largest request the service accepts, in bytes;
	// 0 keeps gRPC's 4 MiB. For batch APIs whose one call must carry a
	// whole set (a full resync).
	MaxRecvMsgSize int
	// Setup registers the service's gRPC services, health checks and
	// shutdown hooks on d. It runs after flags are parsed and before any
	// listener opens; an error aborts start-up.
	Setup func(ctx context.Context, d *Daemon) error
}

// Main runs the service described by spec with the process's arguments,
// stops it on SIGTERM or SIGINT, and returns the exit code: 0 on a clean
// stop, 2 for bad flags, 1 for any other failure.
func Main(spec Spec) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := Run(ctx, spec, os.Args[1:], os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*UsageError)):
		fmt.Fprintf(os.Stderr, "axon-%s: %v\n", spec.Name, err)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "axon-%s: %v\n", spec.Name, err)
		return 1
	}
}

// UsageError is a problem with the command line or environment.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Run parses args, starts the service and blocks until ctx is done, then
// shuts down gracefully. A canceled ctx is a clean stop, not an error.
func Run(ctx context.Context, spec Spec, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("axon-"+spec.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	cfg.RegisterFlags(fs, spec.Defaults)
	if spec.Flags != nil {
		spec.Flags(fs)
	}
	if err := ParseFlags(fs, args, EnvName("AXON", spec.Name)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return &UsageError{err}
	}
	if spec.TCPNeedsMTLS && cfg.PlaintextTCP() {
		return &UsageError{fmt.Errorf("--insecure: axon-%s never serves its API over TCP without mTLS (local clients use --grpc-socket): %w", spec.Name, ErrTCPWithoutMTLS)}
	}
	log, err := cfg.NewLogger(stderr)
	if err != nil {
		return &UsageError{err}
	}
	cfg.MaxRecvMsgSize = spec.MaxRecvMsgSize
	d, err := New(cfg, spec.Name, log)
	if err != nil {
		return err
	}
	if spec.Setup != nil {
		if err := spec.Setup(ctx, d); err != nil {
			d.runCleanups()
			return fmt.Errorf("set up %s: %w", spec.Name, err)
		}
	}
	return d.Serve(ctx)
}

// Check reports whether one dependency of the service is usable.
type Check func(ctx context.Context) error

// ErrNotImplemented is what the check of [NotImplemented] fails with.
var ErrNotImplemented = errors.New("not implemented yet")

// NotImplemented returns a check that always fails: a service whose API
// (named by api, e.g. "PolicyService") answers every RPC with UNIMPLEMENTED
// adds it so that it reports NOT_SERVING, not healthy, until it is written.
func NotImplemented(api string) Check {
	return func(context.Context) error {
		return fmt.Errorf("%s is %w", api, ErrNotImplemented)
	}
}

type namedCheck struct {
	name string
	fn   Check
	// lastErr is the check's previous failure, "" after a pass; a failure is
	// logged only when it differs, so a lasting one is not logged every
	// interval.
	lastErr string
}

// Daemon is a service's running gRPC server with its health, metrics and
// shutdown machinery.
type Daemon struct {
	cfg      Config
	name     string
	log      *slog.Logger
	registry *prometheus.Registry
	grpc     *grpc.Server
	health   *health.Server
	tls      *tls.Config

	rpcMetrics *grpcprom.ServerMetrics
	depUp      *prometheus.GaugeVec
	checks     []namedCheck
	// recheck asks runChecks for a check now; one pending request is
	// enough, so it holds one.
	recheck chan struct{}

	mu       sync.Mutex
	cleanups []func() error
}

// New builds a Daemon from a validated cfg. It reads TLS files, so an
// unreadable or invalid certificate fails here, before anything listens.
func New(cfg Config, name string, log *slog.Logger) (*Daemon, error) {
	tlsCfg, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	log = log.With(LogKeyService, name)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	srvMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(srvMetrics)
	panics := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "axon", Subsystem: name, Name: "grpc_panics_recovered_total",
		Help: "Panics in gRPC handlers that were recovered and answered with INTERNAL.",
	})
	depUp := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "axon", Subsystem: name, Name: "dependency_up",
		Help: "Whether the last health check of a dependency passed (1) or failed (0).",
	}, []string{"dependency"})
	plaintext := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "axon", Subsystem: name, Name: "grpc_tcp_plaintext",
		Help: "1 when the TCP gRPC listener serves plaintext without client authentication (--insecure), else 0.",
	})
	if cfg.PlaintextTCP() {
		plaintext.Set(1)
	}
	reg.MustRegister(panics, depUp, plaintext)

	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		panics.Inc()
		log.ErrorContext(ctx, "recovered panic in gRPC handler", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
	}
	rpcLog := interceptorLogger(log)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			srvMetrics.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(rpcLog, logOpts...),
			recovery.UnaryServerInterceptor(recoverOpt),
		),
		grpc.ChainStreamInterceptor(
			srvMetrics.StreamServerInterceptor(),
			logging.StreamServerInterceptor(rpcLog, logOpts...),
			recovery.StreamServerInterceptor(recoverOpt),
		),
	}
	if cfg.MaxRecvMsgSize > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize))
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	d := &Daemon{
		cfg: cfg, name: name, log: log, registry: reg, grpc: srv, health: hs,
		tls: tlsCfg, depUp: depUp, rpcMetrics: srvMetrics, recheck: make(chan struct{}, 1),
	}
	return d, nil
}

// The gRPC interceptor's log fields (an error's message, a status's) are
// bounded as a backstop: handlers quote user input only in part, but an error
// from deeper down may still carry it whole.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		for i, f := range fields {
			switch v := f.(type) {
			case string:
				fields[i] = bounded.Truncate(v, maxLogField)
			case error:
				fields[i] = bounded.Truncate(v.Error(), maxLogField)
			}
		}
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// maxLogField bounds one field of an RPC's log line.
const maxLogField = 1024

// GRPC is the server to register the service's APIs on.
func (d *Daemon) GRPC() *grpc.Server { return d.grpc }

// Logger is the service's logger.
func (d *Daemon) Logger() *slog.Logger { return d.log }

// Registry is the service's private Prometheus registry.
func (d *Daemon) Registry() prometheus.Registerer { return d.registry }

// AddCheck adds a dependency check; the service reports SERVING only while
// every check passes.
func (d *Daemon) AddCheck(name string, fn Check) {
	d.checks = append(d.checks, namedCheck{name: name, fn: fn})
}

// OnShutdown registers fn to run after the gRPC server has stopped; hooks run
// in reverse order of registration, so a store opened first closes last.
func (d *Daemon) OnShutdown(fn func() error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cleanups = append(d.cleanups, fn)
}

func (d *Daemon) runCleanups() {
	d.mu.Lock()
	fns := d.cleanups
	d.cleanups = nil
	d.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i](); err != nil {
			d.log.Warn("shutdown hook failed", LogKeyError, err)
		}
	}
}

// Serve opens the listeners and serves until ctx is done, then shuts down:
// health NOT_SERVING, GracefulStop bounded by the shutdown timeout, then
// Stop, then the shutdown hooks.
func (d *Daemon) Serve(ctx context.Context) error {
	defer d.runCleanups()
	lis, err := d.listen()
	if err != nil {
		return err
	}
	// Every registered method gets zeroed metrics and a health entry.
	d.rpcMetrics.InitializeMetrics(d.grpc)
	for svc := range d.grpc.GetServiceInfo() {
		d.health.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}

	errc := make(chan error, len(lis)+1)
	for _, l := range lis {
		d.log.Info("serving gRPC", "addr", l.Addr().String(), "network", l.Addr().Network())
		go func() { errc <- d.grpc.Serve(l) }()
	}
	var metricsSrv *http.Server
	if d.cfg.MetricsAddr != "" {
		metricsSrv, err = d.serveMetrics(errc)
		if err != nil {
			d.grpc.Stop()
			return err
		}
	}
	checksDone := make(chan struct{})
	checkCtx, stopChecks := context.WithCancel(ctx)
	go func() {
		defer close(checksDone)
		d.runChecks(checkCtx)
	}()

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	stopChecks()
	<-checksDone
	d.shutdown(metricsSrv)
	return err
}

func (d *Daemon) shutdown(metricsSrv *http.Server) {
	d.log.Info("shutting down")
	d.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		d.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(d.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		d.log.Warn("graceful stop timed out; cutting in-flight RPCs", "timeout", d.cfg.ShutdownTimeout)
		d.grpc.Stop()
		<-stopped
	}
	if metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = metricsSrv.Shutdown(ctx)
	}
}

func (d *Daemon) listen() ([]net.Listener, error) {
	var lis []net.Listener
	if d.cfg.GRPCAddr != "" {
		l, err := listenTCP(d.cfg.GRPCAddr)
		if err != nil {
			return nil, err
		}
		if d.tls != nil {
			l = tls.NewListener(l, d.tls)
		} else {
			d.log.Warn("serving gRPC over TCP in plaintext (--insecure): anyone who reaches the address can call every RPC; give --tls-cert, --tls-key and --tls-client-ca instead",
				"addr", l.Addr().String())
		}
		lis = append(lis, l)
	}
	if d.cfg.UnixSocket != "" {
		l, err := listenUnix(d.cfg.UnixSocket)
		if err != nil {
			closeAll(lis)
			return nil, err
		}
		lis = append(lis, l)
	}
	return lis, nil
}

// listenTCP listens on addr, or takes over the inherited socket an fd:N
// address names.
func listenTCP(addr string) (net.Listener, error) {
	fd, inherited, err := inheritedFD(addr)
	if err != nil {
		return nil, err
	}
	if !inherited {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return l, nil
	}
	f := os.NewFile(uintptr(fd), addr)
	// FileListener holds its own duplicate; the inherited descriptor is done.
	defer f.Close()
	// A socket that does not listen would fail only at its first accept.
	if listening, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil {
		return nil, fmt.Errorf("inherited socket %s: %w", addr, err)
	} else if listening == 0 {
		return nil, fmt.Errorf("inherited socket %s does not listen", addr)
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited socket %s: %w", addr, err)
	}
	if _, ok := l.(*net.TCPListener); !ok {
		_ = l.Close()
		return nil, fmt.Errorf("inherited socket %s: a %s socket, want TCP", addr, l.Addr().Network())
	}
	return l, nil
}

func closeAll(lis []net.Listener) {
	for _, l := range lis {
		_ = l.Close()
	}
}

// listenUnix listens on path with mode 0600, replacing a stale socket left
// by a previous run but never a file of another kind.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// The umask keeps the socket private from the moment it exists.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

func (d *Daemon) serveMetrics(errc chan<- error) (*http.Server, error) {
	l, err := listenTCP(d.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{Registry: d.registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.log.Info("serving metrics", "addr", l.Addr().String())
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return srv, nil
}

// Recheck runs the dependency checks now rather than at the next health
// interval, so that a service reports a change it knows of (say, its
// start-up just finished) when it happens. It does not wait for the checks;
// requests made while one is pending are merged with it.
func (d *Daemon) Recheck() {
	select {
	case d.recheck <- struct{}{}:
	default:
	}
}

// runChecks sets the serving status from the dependency checks until ctx is
// done. With no checks the service is SERVING as soon as it listens.
func (d *Daemon) runChecks(ctx context.Context) {
	ticker := time.NewTicker(d.cfg.HealthInterval)
	defer ticker.Stop()
	serving := false
	first := true
	for {
		ok := d.checkOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if ok != serving || first {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ok {
				st = healthpb.HealthCheckResponse_SERVING
			}
			d.health.SetServingStatus("", st)
			for svc := range d.grpc.GetServiceInfo() {
				d.health.SetServingStatus(svc, st)
			}
			d.log.Info("health changed", "status", st.String())
			serving, first = ok, false
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-d.recheck:
		}
	}
}

func (d *Daemon) checkOnce(ctx context.Context) bool {
	ok := true
	for i := range d.checks {
		c := &d.checks[i]
		cctx, cancel := context.WithTimeout(ctx, d.cfg.HealthInterval)
		err := c.fn(cctx)
		cancel()
		if err != nil {
			ok = false
			d.depUp.WithLabelValues(c.name).Set(0)
			if ctx.Err() == nil && err.Error() != c.lastErr {
				d.log.Warn("health check failed", "dependency", c.name, LogKeyError, err)
				c.lastErr = err.Error()
			}
			continue
		}
		if c.lastErr != "" {
			d.log.Info("health check passes again", "dependency", c.name)
			c.lastErr = ""
		}
		d.depUp.WithLabelValues(c.name).Set(1)
	}
	return ok
}

func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair %s, %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}
	if cfg.TLSClientCAFile != "" {
		pool, err := LoadCertPool(cfg.TLSClientCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// LoadCertPool reads a PEM bundle of CA certificates.
func LoadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}
