package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newLinks(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "links [--json]",
		Short: "List the shareable links; 'links create' issues one, 'links revoke ID' ends one",
		Long: "A shareable link opens one session, SSH or RDP in the browser, on one target as one login, for someone\n" +
			"without a bastion account (who still signs in to the machine itself), as many times as it has uses,\n" +
			"until it expires. Off unless the configuration has links.enabled: true (README, \"Shareable links\").\n" +
			"LEFT is the uses left; STATE is active, expired, revoked or used_up.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			list, err := adminclient.NewClient(*socket).Links(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), list)
			}
			printLinks(cmd.OutOrStdout(), list, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var req admin.LinkRequest
	create := &cobra.Command{
		Use:   "create --target T --protocol ssh|rdp --login L [--valid 24h] [--uses 1]",
		Short: "Issue a shareable link and print its URL, this once (it holds the link's secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			got, err := adminclient.NewClient(*socket).CreateLink(ctx, req)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), got)
			}
			l := got.Link
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n\nlink %s: %s on %s as %s, %d use(s), until %s.\n"+
				"The URL is shown this once; 'bastionctl links revoke %s' ends it.\n",
				got.URL, l.ID, l.Protocol, printable(l.Target), printable(l.Login), l.Uses, l.Expires.Local().Format(time.DateTime), l.ID)
			return nil
		},
	}
	create.Flags().StringVar(&req.Target, "target", "", "the inventory target it opens (required)")
	create.Flags().StringVar(&req.Protocol, "protocol", "", "ssh or rdp (required)")
	create.Flags().StringVar(&req.Login, "login", "", "the login on the machine, the only one it opens (required)")
	create.Flags().StringVar(&req.Valid, "valid", "24h", "how long it opens sessions (30m, 2h, 7d; at most links.max_valid)")
	create.Flags().IntVar(&req.Uses, "uses", 1, "how many sessions it opens (at most links.max_uses)")
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	for _, f := range []string{"target", "protocol", "login"} {
		create.MarkFlagRequired(f)
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a shareable link: its URL opens nothing from now on, and its live sessions end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			l, err := adminclient.NewClient(*socket).RevokeLink(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "link %s revoked (%d of %d uses spent)\n", l.ID, l.Spent, l.Uses)
			return nil
		},
	}
	cmd.AddCommand(create, revoke)
	return cmd
}

func printLinks(out io.Writer, list []admin.Link, now time.Time) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no links")
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTARGET\tPROTOCOL\tLOGIN\tEXPIRES\tLEFT\tSTATE\tCREATED BY")
	for _, l := range list {
		exp := "in " + l.Expires.Sub(now).Round(time.Minute).String()
		if !now.Before(l.Expires) {
			exp = now.Sub(l.Expires).Round(time.Minute).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", printable(l.ID), printable(l.Target), printable(l.Protocol), printable(l.Login),
			exp, l.Left, l.Uses, printable(l.State), printable(l.CreatedBy))
	}
	w.Flush()
	fmt.Fprintf(out, "%d links\n", len(list))
}
