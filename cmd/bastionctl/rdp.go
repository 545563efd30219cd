package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// rdpClient is the desktop client bastionctl rdp starts: a program and its
// arguments, and the .rdp file it opens, if any (written by the caller).
type rdpClient struct {
	path    string
	args    []string
	rdpFile string // contents of the file args name; "" when none
}

// rdpSettings is what the client is told: where the tunnel listens, the
// machine's name (for the window's title), the account to prefill.
type rdpSettings struct {
	port   int
	target string
	user   string
	extra  []string // the user's own client arguments, after --
}

// lookPath finds a program on PATH; tests give their own.
type lookPath func(string) (string, error)

// findRDPClient chooses the platform's RDP client: mstsc on Windows,
// FreeRDP on Linux (xfreerdp under X11, wlfreerdp under Wayland alone;
// version 3 first), and on macOS whatever opens .rdp files (Microsoft's
// Windows App), through open(1) on a generated .rdp file. program, when
// set, is the client to run instead (FreeRDP's command line is assumed
// unless it is mstsc). rdpPath is where the .rdp file will be.
func findRDPClient(goos string, getenv func(string) string, look lookPath, program string, s rdpSettings, rdpPath string) (rdpClient, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	freerdp := func(path string) rdpClient {
		args := []string{"/v:" + addr, "/t:" + s.target + " (through the bastion)"}
		if s.user != "" {
			args = append(args, "/u:"+s.user)
		}
		return rdpClient{path: path, args: append(args, s.extra...)}
	}
	mstsc := func(path string) rdpClient {
		if s.user != "" { // mstsc takes an account only from a .rdp file
			return rdpClient{path: path, args: append([]string{rdpPath}, s.extra...), rdpFile: rdpFileFor(s)}
		}
		return rdpClient{path: path, args: append([]string{"/v:" + addr}, s.extra...)}
	}
	if program != "" {
		path, err := look(program)
		if err != nil {
			return rdpClient{}, fmt.Errorf("--client %s: %w", program, err)
		}
		if strings.EqualFold(strings.TrimSuffix(filepath.Base(program), ".exe"), "mstsc") {
			return mstsc(path), nil
		}
		return freerdp(path), nil
	}
	switch goos {
	case "windows":
		path, err := look("mstsc")
		if err != nil {
			return rdpClient{}, fmt.Errorf("mstsc (Remote Desktop Connection) not found: %w", err)
		}
		return mstsc(path), nil
	case "darwin":
		path, err := look("open")
		if err != nil {
			return rdpClient{}, err
		}
		// -W: open returns when the application quits.
		args := []string{"-W", rdpPath}
		if len(s.extra) > 0 {
			args = append(append(args, "--args"), s.extra...)
		}
		return rdpClient{path: path, args: args, rdpFile: rdpFileFor(s)}, nil
	}
	names := []string{"xfreerdp3", "xfreerdp", "wlfreerdp3", "wlfreerdp"}
	if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") != "" {
		names = []string{"wlfreerdp3", "wlfreerdp", "xfreerdp3", "xfreerdp"}
	}
	for _, name := range names {
		if path, err := look(name); err == nil {
			return freerdp(path), nil
		}
	}
	return rdpClient{}, fmt.Errorf("no RDP client found (looked for %s): install FreeRDP (Debian: freerdp3-x11 or freerdp2-x11), "+
		"name one with --client, or use --print-rdp-file", strings.Join(names, ", "))
}

// rdpFileFor is a .rdp file for the tunnel: CRLF lines, as Windows' own
// clients write them. Credentials are asked for by the client; the file
// holds none.
func rdpFileFor(s rdpSettings) string {
	lines := []string{
		"full address:s:" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		"prompt for credentials:i:1",
		"authentication level:i:2",
		"screen mode id:i:2",
		"use multimon:i:0",
		"redirectclipboard:i:1",
		"autoreconnection enabled:i:0", // a reconnect would need a new tunnel
	}
	if s.user != "" {
		lines = append(lines, "username:s:"+s.user)
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

func newRDP() *cobra.Command {
	var port uint16
	var transport, user, program string
	var printFile, verbose bool
	cmd := &cobra.Command{
		Use:   "rdp TARGET [--user NAME] [-- CLIENT ARGUMENTS]",
		Short: "Open a remote desktop on a machine through the bastion",
		Long: `Open a tunnel to TARGET's RDP port on a free loopback port, start this
system's RDP client against it, and close the tunnel when the client exits:
mstsc on Windows, xfreerdp (or wlfreerdp under Wayland) on Linux, the app
that opens .rdp files (Microsoft's Windows App) on macOS. Arguments after --
go to the client. With --print-rdp-file, print a .rdp file for the tunnel
instead and keep the tunnel open until Ctrl-C, for any other client. Needs
bastionctl login first.`,
		Example: "  bastionctl rdp vm2 --user admin\n  bastionctl rdp vm2 -- /size:1600x900\n  bastionctl rdp vm2 --print-rdp-file > vm2.rdp",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rdpArgs(args, cmd.ArgsLenAtDash()); err != nil {
				return err
			}
			target, extra := strings.ToLower(args[0]), args[1:]
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
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			s := rdpSettings{port: ln.Addr().(*net.TCPAddr).Port, target: target, user: user, extra: extra}
			served := make(chan error, 1)
			tctx, stopTunnel := context.WithCancel(ctx)
			defer func() {
				stopTunnel()
				<-served
			}()
			go func() { served <- serveTunnel(tctx, ln, cl, target, port, cmd.ErrOrStderr(), logf) }()

			if printFile {
				fmt.Fprint(cmd.OutOrStdout(), rdpFileFor(s))
				fmt.Fprintf(cmd.ErrOrStderr(), "bastionctl: tunnel to %s:%d listening on %s; Ctrl-C ends it\n", printable(target), port, ln.Addr())
				<-ctx.Done()
				return nil
			}
			dir, err := os.MkdirTemp("", "bastionctl-rdp-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			c, err := findRDPClient(runtime.GOOS, os.Getenv, exec.LookPath, program, s, filepath.Join(dir, target+".rdp"))
			if err != nil {
				return err
			}
			return runRDPClient(ctx, c, filepath.Join(dir, target+".rdp"), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), logf)
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&port, "port", 3389, "the machine's RDP port")
	f.StringVar(&user, "user", "", "the account on the machine, prefilled in the client")
	f.StringVar(&program, "client", "", "the RDP client to run (a FreeRDP program, or mstsc) instead of this system's")
	f.BoolVar(&printFile, "print-rdp-file", false, "print a .rdp file for the tunnel on standard output and keep the tunnel open until Ctrl-C")
	f.StringVar(&transport, "transport", "auto", "auto (QUIC, else TLS), quic or tcp (TLS only)")
	f.BoolVarP(&verbose, "verbose", "v", false, "say which transport carries each connection")
	return cmd
}

// rdpArgs checks the command's arguments: one machine, then the client's
// own after -- (dash is where they start, -1 without --).
func rdpArgs(args []string, dash int) error {
	machines := args
	if dash >= 0 {
		machines = args[:dash]
	}
	switch {
	case len(machines) == 0:
		return errors.New("the machine comes before --: bastionctl rdp TARGET -- CLIENT ARGUMENTS")
	case len(machines) > 1:
		return fmt.Errorf("one machine at a time (got %s); the client's own arguments go after --", printable(strings.Join(machines, ", ")))
	}
	return nil
}

// runRDPClient writes c's .rdp file, if any, at rdpPath (readable by the
// user only), runs c with the terminal's standard streams, and returns
// when it exits: nil if it succeeded, else its exit status for
// bastionctl's own. Ctrl-C reaches the client too (same process group),
// which ends it.
func runRDPClient(ctx context.Context, c rdpClient, rdpPath string, in io.Reader, out, errOut io.Writer, logf func(string, ...any)) error {
	if c.rdpFile != "" {
		if err := os.WriteFile(rdpPath, []byte(c.rdpFile), 0o600); err != nil {
			return err
		}
	}
	if logf != nil {
		logf("starting %s", strings.Join(append([]string{c.path}, c.args...), " "))
	}
	p := exec.Command(c.path, c.args...)
	p.Stdin, p.Stdout, p.Stderr = in, out, errOut
	if err := p.Start(); err != nil {
		return fmt.Errorf("start the RDP client: %w", err)
	}
	err := p.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return &exitError{code: max(ee.ExitCode(), 1), err: fmt.Errorf("%s exited with status %d", filepath.Base(c.path), ee.ExitCode())}
	}
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
