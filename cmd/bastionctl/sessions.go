package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newSessions(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions [--json]",
		Short: "List the live sessions; 'sessions kill ID --reason TEXT' ends one, 'sessions watch ID' prints its live view's address",
		Long: "List every live session: browser SSH and RDP, and native tunnels. In a cluster, the sessions of every\n" +
			"instance, INSTANCE saying which one carries it; 'sessions kill' ends a session on any of them.\n" +
			"UP and DOWN are what the session has carried so far, from the user to the machine and back (another\n" +
			"instance's counts are at most about 10 seconds old).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			list, err := adminclient.NewClient(*socket).Sessions(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), list)
			}
			printSessions(cmd.OutOrStdout(), list, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var reason string
	kill := &cobra.Command{
		Use:   "kill ID --reason TEXT",
		Short: "End a live session (in a cluster, on any instance); the reason goes into its record, after your user name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return fmt.Errorf("--reason is required: it is recorded with the session")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := adminclient.NewClient(*socket).Kill(ctx, args[0], reason); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "session %s ended\n", args[0])
			return nil
		},
	}
	kill.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	cmd.AddCommand(kill)

	watch := &cobra.Command{
		Use:   "watch ID",
		Short: "Print the address of a live browser session's live view, for an auditor to open",
		Long: "Print the address of the live view of browser session ID (an ID 'sessions' lists): an auditor (a user of\n" +
			"a role with auditor: true) opens it in the browser, signed in, and watches the session read-only; the\n" +
			"session's user sees who watches. Native tunnels are encrypted end to end and cannot be watched. In a\n" +
			"cluster, the session is watched on the instance that carries it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			c := adminclient.NewClient(*socket)
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			list, err := c.Sessions(ctx)
			if err != nil {
				return err
			}
			line, err := watchLine(st, list, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		},
	}
	cmd.AddCommand(watch)
	return cmd
}

// watchLine is what 'sessions watch ID' prints: the live view's address,
// or why the session cannot be watched.
func watchLine(st admin.Status, list []admin.Session, id string) (string, error) {
	for _, s := range list {
		if s.ID != id {
			continue
		}
		if s.Via != "browser" {
			return "", fmt.Errorf("session %s is a native tunnel (via %s): it is encrypted end to end and cannot be watched", printable(id), printable(s.Via))
		}
		if st.ServerName == "" {
			return "", fmt.Errorf("the daemon did not say its server name: open /watch/%s on the bastion's portal", printable(id))
		}
		url := "https://" + st.ServerName + "/watch/" + id
		if s.Instance != "" && st.Instance != "" && s.Instance != st.Instance {
			return url + "   (on instance " + printable(s.Instance) + ": open it there)", nil
		}
		return url, nil
	}
	return "", fmt.Errorf("no live session %s (it ended, or the ID is wrong)", printable(id))
}

func printSessions(out io.Writer, list []admin.Session, now time.Time) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no live sessions")
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tINSTANCE\tUSER\tFROM\tTARGET\tPROTOCOL\tVIA\tSTARTED\tIDLE\tUP\tDOWN")
	for _, s := range list {
		target := s.Target
		if s.Login != "" {
			target = s.Login + "@" + target
		}
		instance := s.Instance
		if instance == "" {
			instance = "-" // a process of a version before instances
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s\t%s\n", printable(s.ID), printable(instance), printable(s.User), s.Client.Addr(),
			printable(fmt.Sprintf("%s:%d", target, s.Port)), printable(s.Protocol), printable(s.Via),
			now.Sub(s.Start).Round(time.Second), now.Sub(s.LastActive).Round(time.Second),
			humanBytes(s.BytesUp), humanBytes(s.BytesDown))
	}
	w.Flush()
	fmt.Fprintf(out, "%d live sessions\n", len(list))
}

// humanBytes is n in B, KiB, MiB or GiB, one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		suffix = s
		if v < unit {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
