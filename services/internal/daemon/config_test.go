package daemon

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "default", want: "127.0.0.1:1"},
		{name: "env overrides default", env: map[string]string{"AXON_TEST_GRPC_ADDR": "0.0.0.0:2"}, want: "0.0.0.0:2"},
		{name: "flag beats env", args: []string{"--grpc-addr", "x:3"}, env: map[string]string{"AXON_TEST_GRPC_ADDR": "0.0.0.0:2"}, want: "x:3"},
		{name: "bad env value", env: map[string]string{"AXON_TEST_SHUTDOWN_TIMEOUT": "soon"}, wantErr: "AXON_TEST_SHUTDOWN_TIMEOUT"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var c Config
			c.RegisterFlags(fs, Defaults{GRPCAddr: "127.0.0.1:1"})
			err := ParseFlags(fs, tt.args, "AXON_TEST")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFlags() error = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFlags() error = %v", err)
			}
			if c.GRPCAddr != tt.want {
				t.Errorf("GRPCAddr = %q, want %q", c.GRPCAddr, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{
		GRPCAddr: ":1", TLSCertFile: "c", TLSKeyFile: "k", TLSClientCAFile: "ca",
		ShutdownTimeout: time.Second, HealthInterval: time.Second, LogLevel: "info", LogFormat: "text",
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "unix only", mutate: func(c *Config) { c.GRPCAddr, c.UnixSocket = "", "/x.sock" }},
		{name: "no listener", mutate: func(c *Config) { c.GRPCAddr = "" }, wantErr: "--grpc-addr or --grpc-socket"},
		{name: "insecure TCP", mutate: func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile, c.Insecure = "", "", "", true }},
		{name: "cert without key", mutate: func(c *Config) { c.TLSKeyFile = "" }, wantErr: "together"},
		{name: "client CA without cert", mutate: func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "", "" }, wantErr: "--tls-client-ca requires"},
		{name: "TCP without TLS", mutate: func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = "", "", "" }, wantErr: ErrTCPWithoutMTLS.Error()},
		{name: "TCP with TLS but no client CA", mutate: func(c *Config) { c.TLSClientCAFile = "" }, wantErr: ErrTCPWithoutMTLS.Error()},
		{name: "insecure and TLS", mutate: func(c *Config) { c.Insecure = true }, wantErr: "exclude each other"},
		{name: "zero shutdown timeout", mutate: func(c *Config) { c.ShutdownTimeout = 0 }, wantErr: "--shutdown-timeout"},
		{name: "zero health interval", mutate: func(c *Config) { c.HealthInterval = 0 }, wantErr: "--health-interval"},
		{name: "bad level", mutate: func(c *Config) { c.LogLevel = "loud" }, wantErr: "--log-level"},
		{name: "bad format", mutate: func(c *Config) { c.LogFormat = "xml" }, wantErr: "--log-format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}
