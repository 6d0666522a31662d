// Package embedetcd runs an etcd member inside the current process: the
// single-machine default of axon-local and the real store of tests.
package embedetcd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config says where the member keeps its data and listens.
type Config struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// ClientAddr and PeerAddr are host:port listen addresses; port 0 picks a
	// free port.
	ClientAddr, PeerAddr string
	// StartTimeout bounds the wait for the member to be ready.
	StartTimeout time.Duration
	// Log receives etcd's errors; nil discards them.
	Log *slog.Logger
	// TLS, if set, makes the member serve clients and peers over https
	// only to those presenting a certificate signed by its CA.
	TLS *TLS

	// listenURL resolves a listen address (tests replace it to lose a
	// chosen port to another listener); nil is the package's listenURL.
	listenURL func(addr string) (url.URL, error)
}

// TLS are the PEM files of a member that requires mTLS.
type TLS struct {
	// CertFile and KeyFile are the member's certificate (server and client
	// usage: members are each other's clients) and key.
	CertFile, KeyFile string
	// CAFile verifies clients' and peers' certificates.
	CAFile string
}

// Server is a running embedded etcd member.
type Server struct {
	etcd      *embed.Etcd
	clientURL string
	closing   *atomic.Bool
}

// Start starts a single-member etcd cluster and waits until it serves.
func Start(c Config) (*Server, error) {
	if c.Dir == "" {
		return nil, errors.New("embedded etcd needs a data directory")
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	cfg := embed.NewConfig()
	cfg.Dir = c.Dir
	cfg.Name = "axon"
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.listenURL == nil {
		c.listenURL = listenURL
	}
	closing := new(atomic.Bool)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(ZapCore(c.Log, zapcore.ErrorLevel, closing)))
	if c.TLS != nil {
		ct, pt := &cfg.ClientTLSInfo, &cfg.PeerTLSInfo
		ct.CertFile, ct.KeyFile, ct.TrustedCAFile, ct.ClientCertAuth = c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile, true
		pt.CertFile, pt.KeyFile, pt.TrustedCAFile, pt.ClientCertAuth = c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile, true
	}
	// A port chosen free (port 0) is closed again before etcd listens on it,
	// so another process can take it in between; then etcd fails before it
	// writes any data, and a start on fresh ports is safe.
	var (
		e         *embed.Etcd
		clientURL url.URL
		err       error
	)
	for attempt := 1; ; attempt++ {
		var retry bool
		e, clientURL, retry, err = startOnce(cfg, c)
		if err == nil {
			break
		}
		if !retry || attempt == startAttempts {
			return nil, err
		}
		c.Log.Warn("embedded etcd port taken before it listened; retrying on other ports", "err", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-time.After(c.StartTimeout):
		closing.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %s", c.StartTimeout)
	}
	return &Server{etcd: e, clientURL: clientURL.String(), closing: closing}, nil
}

// startAttempts bounds the starts on fresh ports after one lost its port.
const startAttempts = 3

// startOnce starts the member on c's addresses; retry says the failure was
// a port it chose free and that was taken since.
func startOnce(cfg *embed.Config, c Config) (_ *embed.Etcd, clientURL url.URL, retry bool, err error) {
	clientURL, err = c.listenURL(c.ClientAddr)
	if err != nil {
		return nil, url.URL{}, false, fmt.Errorf("client address: %w", err)
	}
	peerURL, err := c.listenURL(c.PeerAddr)
	if err != nil {
		return nil, url.URL{}, false, fmt.Errorf("peer address: %w", err)
	}
	if c.TLS != nil {
		clientURL.Scheme, peerURL.Scheme = "https", "https"
	}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		retry := IsAddrInUse(err) &&
			(isPortZero(c.ClientAddr) && strings.Contains(err.Error(), clientURL.Host) ||
				isPortZero(c.PeerAddr) && strings.Contains(err.Error(), peerURL.Host))
		return nil, url.URL{}, retry, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	return e, clientURL, false, nil
}

func isPortZero(addr string) bool {
	if addr == "" {
		return true
	}
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// IsAddrInUse reports whether err is a failure to listen on an address
// another socket holds, as etcd returns it.
func IsAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// listenURL turns host:port into an http URL, resolving port 0 to a free
// port now, because etcd must advertise the port it listens on.
func listenURL(addr string) (url.URL, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return url.URL{}, err
	}
	if port == "0" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return url.URL{}, err
		}
		addr = l.Addr().String()
		if err := l.Close(); err != nil {
			return url.URL{}, err
		}
	}
	return url.URL{Scheme: "http", Host: addr}, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.clientURL }

// Err reports a fatal error of the running member.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member.
func (s *Server) Close() {
	s.closing.Store(true)
	s.etcd.Close()
}
