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
		Short: "List the live sessions; 'sessions kill ID --reason TEXT' ends one",
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
	return cmd
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
