package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/proxy/tunnel"
)

// tlsConfig checks the bastion's certificate against the system roots or
// c.CA.
func (c credentials) tlsConfig() (*tls.Config, error) {
	host := c.Server
	if h, _, err := net.SplitHostPort(c.Server); err == nil {
		host = h
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", c.CA)
		}
	}
	return tc, nil
}

// tunnelClient is a tunnel client for the logged-in bastion.
func tunnelClient(transport string, verbose bool) (*tunnel.Client, error) {
	c, _, err := loadCredentials()
	if err != nil {
		return nil, err
	}
	if !c.Expires.IsZero() && time.Now().After(c.Expires) {
		return nil, fmt.Errorf("your login expired at %s: run bastionctl login", c.Expires.Local().Format(time.RFC1123))
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg := tunnel.ClientConfig{Server: c.Server, Address: c.Address, TLS: tc, Token: c.Token, Transport: transport}
	if verbose {
		cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bastionctl: "+format+"\n", args...) }
	}
	return tunnel.NewClient(cfg)
}

func newTunnel() *cobra.Command {
	var port uint16
	var listen, transport string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "tunnel TARGET --port N [--listen ADDR]",
		Short: "Carry local TCP connections to a machine's port through the bastion",
		Long: "Listen on ADDR (default 127.0.0.1, a free port) and carry each connection made to it to TARGET's port\n" +
			"through the bastion: point xfreerdp, mstsc or any TCP client at ADDR. QUIC on UDP 443, or TLS on TCP 443\n" +
			"when UDP is blocked. Needs bastionctl login first.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port == 0 {
				return errors.New("--port is required")
			}
			cl, err := tunnelClient(transport, verbose)
			if err != nil {
				return err
			}
			defer cl.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				ln.Close()
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "tunnel to %s:%d listening on %s\n", args[0], port, ln.Addr())
			return serveTunnel(ctx, ln, cl, args[0], port, cmd.ErrOrStderr(), verbose)
		},
	}
	cmd.Flags().Uint16Var(&port, "port", 0, "the machine's port (required)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "local address to listen on")
	cmd.Flags().StringVar(&transport, "transport", "auto", "auto, quic or tcp")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "say which transport carries each connection")
	return cmd
}

// serveTunnel carries every connection accepted on ln until ctx ends,
// then closes them all.
func serveTunnel(ctx context.Context, ln net.Listener, cl *tunnel.Client, target string, port uint16, errOut io.Writer, verbose bool) error {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		local, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		track(local, true)
		wg.Go(func() {
			defer track(local, false)
			defer local.Close()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			remote, err := cl.Dial(dctx, target, port)
			cancel()
			if err != nil {
				fmt.Fprintf(errOut, "bastionctl: %v\n", err)
				return
			}
			track(remote, true)
			defer track(remote, false)
			if verbose {
				fmt.Fprintf(errOut, "bastionctl: %s -> %s:%d over %s (session %s)\n", local.RemoteAddr(), target, port, cl.Transport(), remote.SessionID())
			}
			tunnel.Join(local, remote)
		})
	}
}

func newSSHProxy() *cobra.Command {
	var port uint16
	var transport string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "ssh-proxy TARGET [--port 22]",
		Short: "OpenSSH ProxyCommand: carry stdin and stdout to a machine's SSH port through the bastion",
		Long: "For ssh -o ProxyCommand='bastionctl ssh-proxy %n' or ProxyCommand in ~/.ssh/config. Needs bastionctl login\n" +
			"first. Exits 255 when the bastion refuses, as ssh does.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := tunnelClient(transport, verbose)
			if err == nil {
				defer cl.Close()
				ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				var remote *tunnel.Conn
				remote, err = cl.Dial(ctx, args[0], port)
				cancel()
				if err == nil {
					_, _, err = tunnel.Join(stdio{}, remote)
					if err != nil {
						return err
					}
					return nil
				}
			}
			fmt.Fprintln(os.Stderr, "bastionctl:", err)
			os.Exit(255)
			return nil
		},
	}
	cmd.Flags().Uint16Var(&port, "port", 22, "the machine's SSH port")
	cmd.Flags().StringVar(&transport, "transport", "auto", "auto, quic or tcp")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "say which transport is used")
	return cmd
}

// stdio is standard input and output as one connection end; CloseWrite
// closes standard output, which is how ssh learns the end of the stream.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) CloseWrite() error           { return os.Stdout.Close() }
func (stdio) Close() error {
	os.Stdin.Close()
	return os.Stdout.Close()
}
