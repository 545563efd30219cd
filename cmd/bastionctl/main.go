// Command bastionctl is the admin and user command line of bastiond. The
// user commands (login, logout, tunnel, ssh-proxy, rdp) run on Linux, macOS and
// Windows and talk to the bastion on port 443; the admin commands talk to
// the daemon's admin socket on the bastion host (Linux). It links no server
// code: only the wire types (package api) and the tunnel client.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/internal/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bastionctl:", printableError(err))
		os.Exit(exitCode(err))
	}
}

func newRoot() *cobra.Command { return newRootOn(runtime.GOOS) }

// newRootOn is the command line as it is on the system goos: the admin
// commands, which talk to the daemon's unix socket on the bastion host,
// refuse to run on any system but Linux.
func newRootOn(goos string) *cobra.Command {
	var socket string
	root := &cobra.Command{
		Use:           "bastionctl",
		Short:         "Manage and use a bastiond bastion",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&socket, "socket", defaultSocket(), "the daemon's admin socket (default from $"+socketEnv+" when set)")
	root.AddCommand(newLogin(), newLogout(), newTunnel(), newSSHProxy(), newRDP(), newAudit(&socket, goos))
	for _, cmd := range []*cobra.Command{newStatus(&socket), newPolicy(&socket), newTargets(&socket), newUsers(&socket),
		newTokens(&socket), newSessions(&socket), newHostKeys(&socket), newCA(&socket), newUpgrade(&socket),
		newReload(&socket), newRecordings(&socket), newLinks(&socket)} {
		root.AddCommand(adminCommand(cmd, goos))
	}
	return root
}

// adminCommand marks cmd as an admin command: on goos other than Linux it
// and its subcommands fail with a message that says where they run.
func adminCommand(cmd *cobra.Command, goos string) *cobra.Command {
	if goos != "linux" {
		cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
			return fmt.Errorf("%s: admin commands run on the bastion host (Linux); this is %s", cmd.Name(), goos)
		}
	}
	return cmd
}

// socketEnv names the environment variable that holds the admin socket's
// path when --socket is not given.
const socketEnv = "BASTION_SOCKET"

// defaultSocket is the admin socket --socket stands for when absent:
// $BASTION_SOCKET, or the installed daemon's.
func defaultSocket() string {
	if p := os.Getenv(socketEnv); p != "" {
		return p
	}
	return "/run/bastiond/admin.sock"
}

func newStatus(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, uptime, configuration, listeners and sessions, and each cluster instance's load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := adminclient.NewClient(*socket).Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(out io.Writer, st admin.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	state := "running"
	if st.Draining {
		state = "draining"
	}
	fmt.Fprintf(w, "bastiond\t%s (pid %d, %s)\n", printable(st.Version), st.PID, state)
	fmt.Fprintf(w, "uptime\t%s (since %s)\n", st.Now.Sub(st.Started).Round(time.Second), st.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "config\t%s\n", printable(st.ConfigFile))
	fmt.Fprintf(w, "digest\tsha256:%s (loaded %s)\n", printable(st.ConfigDigest), st.ConfigLoaded.Format(time.RFC3339))
	if r := st.LastReload; r != nil {
		if r.OK {
			fmt.Fprintf(w, "last reload\tok at %s\n", r.Time.Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "last reload\tFAILED at %s, previous configuration kept: %s\n", r.Time.Format(time.RFC3339), printable(r.Error))
		}
	}
	for _, l := range st.Listeners {
		how := ""
		if l.Activated {
			how = " (from systemd)"
		}
		fmt.Fprintf(w, "listener\t%s %s%s\n", printable(l.Network), printable(l.Address), how)
	}
	fmt.Fprintf(w, "sessions\t%d\n", st.Sessions)
	if p := st.Previous; p != nil {
		fmt.Fprintf(w, "previous process\t%s (pid %d) serves its %d sessions until they end (upgrade)\n", printable(p.Version), p.PID, p.Sessions)
	}
	for _, in := range st.Cluster {
		fmt.Fprintf(w, "instance\t%s\n", instanceLine(in, st.Instance, st.Now))
	}
	w.Flush()
}

// instanceLine is one cluster instance's load, as its heartbeat says:
// "b: 12 of 100 units used (12%), 9 sessions; v1.4.0 pid 812, heard 2s ago".
func instanceLine(in admin.Instance, self string, now time.Time) string {
	pct := 0
	if in.Capacity > 0 {
		pct = in.Used * 100 / in.Capacity
	}
	line := fmt.Sprintf("%s: %d of %d units used (%d%%), %d sessions", printable(in.Name), in.Used, in.Capacity, pct, in.Sessions)
	switch {
	case in.Draining:
		line += ", draining"
	case in.Used >= in.Capacity:
		line += ", full"
	}
	line += fmt.Sprintf("; %s pid %d, heard %s ago", printable(in.Version), in.PID, max(now.Sub(in.Seen), 0).Round(time.Second))
	if in.Name == self {
		line += " (this instance)"
	}
	return line
}
