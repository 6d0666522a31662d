package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/axon-cni/axon/bpf/testpoll"
	"github.com/axon-cni/axon/services/internal/testpki"
)

// serve runs a daemon with args in the background and returns a channel
// with Run's result; the daemon stops when the test ends.
func serve(t *testing.T, spec Spec, args ...string) <-chan error {
	t.Helper()
	return serveLogging(t, spec, io.Discard, args...)
}

// serveLogging is serve with the daemon's log written to log.
func serveLogging(t *testing.T, spec Spec, log io.Writer, args ...string) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, spec, args, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not stop within 10s")
		}
	})
	return done
}

func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// waitStatus polls health until it reports want.
func waitStatus(t *testing.T, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	testpoll.Until(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("health check: %w", err)
		}
		if got := resp.GetStatus(); got != want {
			return fmt.Errorf("health is %s, want %s", got, want)
		}
		return nil
	})
}

// inherit returns an fd:N address for a duplicate of f's descriptor, which
// the daemon takes over (and closes) as it would a socket its parent passed.
func inherit(t *testing.T, f *os.File) string {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return "fd:" + strconv.Itoa(fd)
}

// listenInherited listens on a free loopback port and returns its address
// and the fd:N address of the same socket.
func listenInherited(t *testing.T) (addr, inherited string) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return l.Addr().String(), inherit(t, f)
}

func TestServeUnixSocketHealthAndReflection(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sub", "api.sock")
	var healthy atomic.Bool
	spec := Spec{
		Name: "test",
		Setup: func(_ context.Context, d *Daemon) error {
			d.AddCheck("dep", func(context.Context) error {
				if healthy.Load() {
					return nil
				}
				return errors.New("dependency down")
			})
			return nil
		},
	}
	done := serve(t, spec, "--grpc-addr=", "--grpc-socket", sock, "--health-interval", "20ms")
	conn := dial(t, "unix://"+sock)

	waitStatus(t, conn, healthpb.HealthCheckResponse_NOT_SERVING)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %o, want 600", perm)
	}
	healthy.Store(true)
	waitStatus(t, conn, healthpb.HealthCheckResponse_SERVING)
	healthy.Store(false)
	waitStatus(t, conn, healthpb.HealthCheckResponse_NOT_SERVING)
	healthy.Store(true)
	waitStatus(t, conn, healthpb.HealthCheckResponse_SERVING)

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v, want grpc.health.v1.Health among them", names)
	}
	select {
	case err := <-done:
		t.Fatalf("daemon stopped early: %v", err)
	default:
	}
}

func TestServeStopsGracefully(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(t.Context())
	var closed atomic.Int32
	spec := Spec{Name: "test", Setup: func(_ context.Context, d *Daemon) error {
		d.OnShutdown(func() error { closed.Add(1); return nil })
		return nil
	}}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, spec, []string{"--grpc-addr=", "--grpc-socket", sock}, io.Discard) }()
	waitStatus(t, dial(t, "unix://"+sock), healthpb.HealthCheckResponse_SERVING)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run() after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if closed.Load() != 1 {
		t.Errorf("shutdown hook ran %d times, want 1", closed.Load())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after shutdown: %v", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(notSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	unixListener, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "unix.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer unixListener.Close()
	unixFile, err := unixListener.File()
	if err != nil {
		t.Fatal(err)
	}
	defer unixFile.Close()
	tcpListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpListener.Close()
	conn, err := net.Dial("tcp", tcpListener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connFile, err := conn.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer connFile.Close()
	tests := []struct {
		name      string
		args      []string
		wantUsage bool
		wantErr   string
		// inherit, if set, is passed (a duplicate of it) as the last
		// argument, an fd:N address the daemon takes over.
		inherit *os.File
	}{
		{name: "unknown flag", args: []string{"--bogus"}, wantUsage: true, wantErr: "bogus"},
		{name: "bad duration", args: []string{"--shutdown-timeout", "x"}, wantUsage: true, wantErr: "shutdown-timeout"},
		{name: "missing TLS file", args: []string{"--grpc-addr", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "nope.pem"), "--tls-key", filepath.Join(dir, "nope.key"), "--tls-client-ca", garbage}, wantErr: "load TLS key pair"},
		{name: "garbage TLS file", args: []string{"--grpc-addr", "127.0.0.1:0", "--tls-cert", garbage, "--tls-key", garbage, "--tls-client-ca", garbage}, wantErr: "load TLS key pair"},
		{name: "listen on a regular file", args: []string{"--grpc-addr=", "--grpc-socket", notSocket}, wantErr: "not a socket"},
		{name: "invalid listen address", args: []string{"--grpc-addr", "256.0.0.1:1", "--insecure"}, wantErr: "listen on"},
		{name: "TCP without TLS", args: []string{"--grpc-addr", "127.0.0.1:0"}, wantUsage: true, wantErr: ErrTCPWithoutMTLS.Error()},
		{name: "TCP with TLS but no client CA", args: []string{"--grpc-addr", "127.0.0.1:0", "--tls-cert", garbage, "--tls-key", garbage}, wantUsage: true, wantErr: ErrTCPWithoutMTLS.Error()},
		{name: "insecure with TLS", args: []string{"--grpc-addr", "127.0.0.1:0", "--insecure", "--tls-cert", garbage, "--tls-key", garbage}, wantUsage: true, wantErr: "exclude each other"},
		{name: "inherited socket not a number", args: []string{"--grpc-addr", "fd:x"}, wantUsage: true, wantErr: "want fd:N"},
		{name: "inherited socket a standard stream", args: []string{"--grpc-addr", "127.0.0.1:0", "--metrics-addr", "fd:2"}, wantUsage: true, wantErr: "--metrics-addr"},
		{name: "inherited descriptor not a socket", args: []string{"--insecure", "--grpc-addr", ""}, inherit: file, wantErr: "inherited socket"},
		{name: "inherited socket not TCP", args: []string{"--insecure", "--grpc-addr", ""}, inherit: unixFile, wantErr: "want TCP"},
		{name: "inherited socket not listening", args: []string{"--insecure", "--grpc-addr", ""}, inherit: connFile, wantErr: "does not listen"},
		{name: "one inherited socket twice", args: []string{"--grpc-addr", "fd:3", "--metrics-addr", "fd:3"}, wantUsage: true, wantErr: "same inherited socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The descriptor is made only for the case that uses it: the
			// daemon takes it over.
			if tt.inherit != nil {
				tt.args[len(tt.args)-1] = inherit(t, tt.inherit)
			}
			var stderr bytes.Buffer
			err := Run(t.Context(), Spec{Name: "test"}, tt.args, &stderr)
			if err == nil {
				t.Fatal("Run() = nil, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Run() = %v, want it to mention %q", err, tt.wantErr)
			}
			var usage *UsageError
			if got := errors.As(err, &usage); got != tt.wantUsage {
				t.Errorf("usage error = %v, want %v (%v)", got, tt.wantUsage, err)
			}
		})
	}
}

func TestServeMutualTLSAndMetrics(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t)
	srvCert, srvKey := ca.Issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := ca.WriteCert(t, dir, "ca.pem")

	// The sockets are inherited, as axon-local passes them, so no other
	// process can take the ports between choosing and listening.
	addr, grpcFD := listenInherited(t)
	metricsAddr, metricsFD := listenInherited(t)
	serve(t, Spec{Name: "test"}, "--grpc-addr", grpcFD, "--metrics-addr", metricsFD,
		"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", caFile)

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1"})
	waitStatus(t, dial(t, addr, grpc.WithTransportCredentials(withCert)), healthpb.HealthCheckResponse_SERVING)

	// A certificate of another CA is no better than none.
	otherDir := t.TempDir()
	otherCert, otherKey := testpki.New(t).Issue(t, otherDir, "client", x509.ExtKeyUsageClientAuth)
	otherPair, err := tls.LoadX509KeyPair(otherCert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{name: "no client certificate"},
		{name: "a certificate of another CA", certs: []tls.Certificate{otherPair}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: tc.certs, ServerName: "127.0.0.1"})
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := healthpb.NewHealthClient(dial(t, addr, grpc.WithTransportCredentials(creds))).
				Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				t.Fatal("health check succeeded, want a TLS failure")
			}
		})
	}

	body := scrape(t, metricsAddr)
	for _, want := range []string{"grpc_server_handled_total", "go_goroutines", "axon_test_grpc_tcp_plaintext 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// scrape returns the text of the /metrics endpoint at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestServeInsecurePlaintext checks the explicit opt-in to a plaintext TCP
// listener: it serves, warns in the log and says so in its metrics.
func TestServeInsecurePlaintext(t *testing.T) {
	addr, grpcFD := listenInherited(t)
	metricsAddr, metricsFD := listenInherited(t)
	log := &syncBuffer{}
	serveLogging(t, Spec{Name: "test"}, log, "--grpc-addr", grpcFD, "--metrics-addr", metricsFD, "--insecure")
	waitStatus(t, dial(t, addr), healthpb.HealthCheckResponse_SERVING)
	if got := log.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "plaintext (--insecure)") {
		t.Errorf("log lacks the plaintext warning:\n%s", got)
	}
	if body := scrape(t, metricsAddr); !strings.Contains(body, "axon_test_grpc_tcp_plaintext 1") {
		t.Errorf("/metrics lacks axon_test_grpc_tcp_plaintext 1")
	}
}

// syncBuffer is a bytes.Buffer safe for a daemon's concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNotImplemented(t *testing.T) {
	err := NotImplemented("axon.test.v1.TestService")(t.Context())
	if !errors.Is(err, ErrNotImplemented) {
		t.Errorf("err = %v, want %v", err, ErrNotImplemented)
	}
	if want := "axon.test.v1.TestService is not implemented yet"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestRecheckReportsReadinessBeforeTheInterval(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	var ready atomic.Bool
	// notReady counts checks that saw ready false: health starts NOT_SERVING
	// before any check, so only this shows that the first check has run.
	var notReady atomic.Int32
	daemons := make(chan *Daemon, 1)
	spec := Spec{
		Name: "test",
		Setup: func(_ context.Context, d *Daemon) error {
			d.AddCheck("start-up", func(context.Context) error {
				if ready.Load() {
					return nil
				}
				notReady.Add(1)
				return errors.New("not started")
			})
			daemons <- d
			return nil
		},
	}
	// An interval no test waits out: only Recheck can turn health SERVING.
	serve(t, spec, "--grpc-addr=", "--grpc-socket", sock, "--health-interval", "1h")
	d := <-daemons
	conn := dial(t, "unix://"+sock)
	testpoll.Until(t, 10*time.Second, func() error {
		if notReady.Load() == 0 {
			return errors.New("the first health check has not run")
		}
		return nil
	})
	waitStatus(t, conn, healthpb.HealthCheckResponse_NOT_SERVING)

	// From here on a SERVING can only come from a check after Recheck.
	ready.Store(true)
	d.Recheck()
	d.Recheck() // merged with the pending one; must not block
	waitStatus(t, conn, healthpb.HealthCheckResponse_SERVING)
}
