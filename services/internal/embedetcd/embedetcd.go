// Package embedetcd runs an etcd member inside the current process: the
// single-machine default of axon-local and the real store of tests.
package embedetcd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
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
	closing := new(atomic.Bool)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&slogCore{
		log: c.Log, level: zapcore.ErrorLevel, closing: closing,
	}))
	clientURL, err := listenURL(c.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("client address: %w", err)
	}
	peerURL, err := listenURL(c.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("peer address: %w", err)
	}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
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
