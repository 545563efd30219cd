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

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
)

const (
	// dialTimeout bounds opening one tunnel: reaching the bastion and its
	// connection to the target.
	dialTimeout = 30 * time.Second
	// upGrace is how long ssh-proxy, once the machine has ended its
	// stream, still carries what ssh sends.
	upGrace = time.Second
)

// tlsConfig checks the bastion's certificate against the system roots or
// c.CA (or not at all with c.Insecure).
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

// tunnelClient is a tunnel client for the bastion c signed in to. logf,
// if not nil, is told which transport carries the tunnels.
func (c credentials) tunnelClient(transport string, logf func(string, ...any)) (*tunnel.Client, error) {
	if !c.Expires.IsZero() && time.Now().After(c.Expires) {
		return nil, fmt.Errorf("your login expired at %s: run bastionctl login", c.Expires.Local().Format(time.DateTime))
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg := tunnel.ClientConfig{Server: c.Server, Address: c.Address, TLS: tc, Token: c.Token, Transport: transport, Logf: logf}
	if cache, ok := userTransportCache(); ok {
		cfg.QUICBlocked = cache.udpBlocked(c.Server, time.Now())
		cfg.NoteQUIC = func(blocked bool) {
			if blocked == cfg.QUICBlocked {
				return
			}
			if err := cache.note(c.Server, blocked, time.Now()); err != nil && logf != nil {
				logf("cannot remember the transport: %v", err)
			}
		}
	}
	return tunnel.NewClient(cfg)
}

// loginClient loads the credentials of bastionctl login and makes their
// tunnel client.
func loginClient(transport string, logf func(string, ...any)) (*tunnel.Client, error) {
	c, _, err := loadCredentials()
	if err != nil {
		return nil, err
	}
	return c.tunnelClient(transport, logf)
}

// stderrLog is a logger for -v: nil (silent) unless verbose.
func stderrLog(w io.Writer, verbose bool) func(string, ...any) {
	if !verbose {
		return nil
	}
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(w, printable(fmt.Sprintf("bastionctl: "+format, args...)))
	}
}

func newTunnel() *cobra.Command {
	var port uint16
	var listen, transport string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "tunnel TARGET --port N [--listen ADDR]",
		Short: "Carry local TCP connections to a machine's port through the bastion",
		Long: `Listen on ADDR and carry each connection made to it to TARGET's port
through the bastion, which checks that your roles allow it: point xfreerdp,
mstsc or any TCP client at ADDR. The tunnels ride on QUIC (UDP 443), or on
TLS (TCP 443) where UDP is blocked. Needs bastionctl login first. Stop it
with Ctrl-C.`,
		Example: "  bastionctl tunnel vm2 --port 3389 --listen 127.0.0.1:13389\n  xfreerdp /v:127.0.0.1:13389\n" +
			"  bastionctl tunnel 2001:db8:20::5 --port 22 --listen 127.0.0.1:2222   # an address in a network",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port == 0 {
				return errors.New("--port is required")
			}
			// A name, or an address inside a network of the inventory.
			target := tunnelwire.CanonicalTarget(args[0])
			logf := stderrLog(cmd.ErrOrStderr(), verbose)
			cl, err := loginClient(transport, logf)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if ok, err := reach(ctx, cl, logf); !ok {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tunnel to %s:%d listening on %s\n", printable(target), port, ln.Addr())
			return serveTunnel(ctx, ln, cl, target, port, cmd.ErrOrStderr(), logf)
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&port, "port", 0, "the machine's port (required)")
	f.StringVar(&listen, "listen", "127.0.0.1:0", "local address to listen on (port 0: a free one, printed)")
	f.StringVar(&transport, "transport", "auto", "auto (QUIC, else TLS), quic or tcp (TLS only)")
	f.BoolVarP(&verbose, "verbose", "v", false, "say which transport carries each connection")
	return cmd
}

// reach connects cl to the bastion within dialTimeout, so that a user
// learns at once when it cannot be reached, and says over what (-v). It
// returns false and no error when ctx ended first (Ctrl-C).
func reach(ctx context.Context, cl *tunnel.Client, logf func(string, ...any)) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, dialTimeout)
	via, err := cl.Connect(cctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	if logf != nil {
		logf("the bastion answers over %s", via)
	}
	return true, nil
}

// dialer opens tunnels: a *tunnel.Client.
type dialer interface {
	Dial(ctx context.Context, target string, port uint16) (net.Conn, error)
}

var _ dialer = (*tunnel.Client)(nil)

// serveTunnel carries each connection accepted on ln to target's port,
// concurrently, until ctx ends; then it stops accepting, closes every
// connection and returns nil. A tunnel the bastion refuses is told on
// errOut and its local connection closed; the others go on.
func serveTunnel(ctx context.Context, ln net.Listener, d dialer, target string, port uint16, errOut io.Writer, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var mu sync.Mutex // guards open and errOut
	open := map[net.Conn]bool{}
	var wg sync.WaitGroup
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	defer func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	// track adds c to the connections closed at the end, or closes it if
	// that is now.
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			c.Close()
			return false
		}
		open[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		delete(open, c)
		c.Close()
	}
	for {
		local, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and go on.
			mu.Lock()
			fmt.Fprintf(errOut, "bastionctl: %s\n", printableError(err))
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !track(local) {
			return nil
		}
		wg.Go(func() {
			defer untrack(local)
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			remote, err := d.Dial(dctx, target, port)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					mu.Lock()
					fmt.Fprintf(errOut, "bastionctl: %s\n", printableError(err))
					mu.Unlock()
				}
				return
			}
			if !track(remote) {
				return
			}
			defer untrack(remote)
			from := local.RemoteAddr()
			logf("%s: tunnel to %s:%d open%s", from, target, port, describe(remote))
			up, down, err := tunnel.Join(local, remote)
			if err != nil && ctx.Err() == nil {
				logf("%s: tunnel to %s:%d failed after %d bytes up, %d down: %v", from, target, port, up, down, err)
				return
			}
			logf("%s: tunnel to %s:%d closed after %d bytes up, %d down", from, target, port, up, down)
		})
	}
}

// describe is " over quic (session ...)" for a tunnel conn.
func describe(c net.Conn) string {
	tc, ok := c.(*tunnel.Conn)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" over %s (session %s)", tc.Transport(), tc.SessionID())
}

func newSSHProxy() *cobra.Command {
	var port uint16
	var transport string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "ssh-proxy TARGET [--port 22]",
		Short: "OpenSSH ProxyCommand: carry standard input and output to a machine's SSH port through the bastion",
		Long: `Open one tunnel to TARGET's SSH port through the bastion and carry standard
input and output over it, for OpenSSH's ProxyCommand. TARGET is a machine's
name, or an address inside a network your roles grant (10.20.1.5,
2001:db8:20::5 or [2001:db8:20::5]). Needs bastionctl login
first. Like ssh, it exits with status 255 when the tunnel cannot be opened.`,
		Example: "  ssh -o ProxyCommand='bastionctl ssh-proxy %h --port %p' admin@vm1\n" +
			"  ssh -o ProxyCommand='bastionctl ssh-proxy %h --port %p' admin@10.20.1.5   # an address in a network\n\n" +
			"  # ~/.ssh/config\n  Host vm1 vm2 10.20.* 2001:db8:20:*\n      ProxyCommand bastionctl ssh-proxy %h --port %p",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			logf := stderrLog(cmd.ErrOrStderr(), verbose)
			// ssh sends its ProxyCommand SIGHUP as it exits, having closed
			// its ends of our standard input and output: that is the normal
			// end, and ends the tunnel properly, so that the bastion records
			// it at once as the client's close. A write to ssh's closed
			// output is then a broken pipe, not a fatal SIGPIPE.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			signal.Ignore(syscall.SIGPIPE)
			err := func() error {
				cl, err := loginClient(transport, logf)
				if err != nil {
					return err
				}
				defer cl.Close()
				return sshProxy(ctx, cl, tunnelwire.CanonicalTarget(args[0]), port, cmd.InOrStdin(), cmd.OutOrStdout(), logf)
			}()
			if err != nil {
				// Standard output is the SSH stream: nothing else goes there.
				fmt.Fprintln(cmd.ErrOrStderr(), "bastionctl:", printableError(err))
				os.Exit(255)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&port, "port", 22, "the machine's SSH port")
	f.StringVar(&transport, "transport", "auto", "auto (QUIC, else TLS), quic or tcp (TLS only)")
	f.BoolVarP(&verbose, "verbose", "v", false, "say which transport carries the connection (on standard error)")
	return cmd
}

// sshProxy opens one tunnel and carries in to it and what comes back to
// out. It returns nil at a normal end: the machine ended its stream
// (after carrying what in still holds for at most upGrace: ssh's last
// words), ctx ended (ssh exited and sent SIGHUP), or out was closed (ssh
// is gone). Each ends the tunnel with an end of stream and a close. An
// error is a tunnel that failed: refused, or cut before its end.
func sshProxy(ctx context.Context, d dialer, target string, port uint16, in io.Reader, out io.Writer, logf func(string, ...any)) error {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := d.Dial(dctx, target, port)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	if logf != nil {
		logf("tunnel to %s:%d open%s", target, port, describe(conn))
	}
	upDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		if err == nil {
			err = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		upDone <- err
	}()
	downDone := make(chan error, 1)
	var remote tunnel.ReadErr // tells a failed read of the tunnel from a failed write of the output
	go func() {
		remote.R = conn
		_, err := io.Copy(out, &remote)
		downDone <- err
	}()
	select {
	case err := <-downDone:
		switch {
		case err == nil:
			// The machine ended its stream: ssh's last words still go up.
			t := time.NewTimer(upGrace)
			defer t.Stop()
			select {
			case err := <-upDone:
				if err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
					return err
				}
			case <-t.C:
				// ssh has not ended its stream; it learns the end from
				// out, and Close ends ours.
			case <-ctx.Done():
			}
			return nil
		case remote.Err != nil && ctx.Err() == nil:
			return err // the tunnel was cut
		}
		// out was closed (ssh is gone), or ctx ended.
	case <-ctx.Done():
	}
	// ssh has finished. Its end of stream has usually reached us already:
	// let it go up before the close, so that the bastion reads the
	// client's end, not a cut.
	t := time.NewTimer(endGrace)
	defer t.Stop()
	select {
	case <-upDone:
	case <-t.C:
	}
	return nil
}

// endGrace is how long sshProxy, once ssh has finished, waits for the end
// of ssh's stream to be sent before it closes the tunnel.
const endGrace = 100 * time.Millisecond
