package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newPolicy(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Audit the firewall: show, verify, export, blocklist",
	}
	client := func(cmd *cobra.Command) (*adminclient.Client, context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		return adminclient.NewClient(*socket), ctx, cancel
	}
	var withCounters, countersJSON bool
	show := &cobra.Command{
		Use:   "show [--counters [--json]]",
		Short: "Print the nftables policy in force, in nft syntax, or its per-target counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := client(cmd)
			defer cancel()
			if countersJSON && !withCounters {
				return errors.New("--json goes with --counters")
			}
			if withCounters {
				v, err := c.Counters(ctx)
				if err != nil {
					return err
				}
				if countersJSON {
					return encodeJSON(cmd.OutOrStdout(), v)
				}
				printCounters(cmd.OutOrStdout(), v)
				return nil
			}
			v, err := c.Policy(ctx)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), printableText(v.Text))
			if len(v.Differences) > 0 {
				printDifferences(cmd.ErrOrStderr(), v.Differences)
			}
			return nil
		},
	}
	show.Flags().BoolVar(&withCounters, "counters", false, "print the per-target counters (packets and bytes sent, received and blocked) instead")
	show.Flags().BoolVar(&countersJSON, "json", false, "with --counters: print JSON")
	cmd.AddCommand(show)
	cmd.AddCommand(&cobra.Command{
		Use:   "verify",
		Short: "Compare the kernel's tables with the compiled policy; exit 1 on any difference",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := client(cmd)
			defer cancel()
			v, err := c.Policy(ctx)
			if err != nil {
				return err
			}
			if len(v.Differences) > 0 {
				printDifferences(cmd.OutOrStdout(), v.Differences)
				return errors.New("the kernel differs from the compiled policy")
			}
			fmt.Fprintln(cmd.OutOrStdout(), "in force: the kernel's tables match the compiled policy")
			return nil
		},
	})
	var target string
	export := &cobra.Command{
		Use:   "export --target NAME",
		Short: "Print the nft script that makes a machine accept SSH/RDP from the bastion only",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := client(cmd)
			defer cancel()
			text, err := c.Export(ctx, target)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), printableText(text))
			return nil
		},
	}
	export.Flags().StringVar(&target, "target", "", "the target's name in the inventory")
	export.MarkFlagRequired("target")
	cmd.AddCommand(export)
	cmd.AddCommand(newBlocklist(client))
	return cmd
}

func newBlocklist(client func(*cobra.Command) (*adminclient.Client, context.Context, context.CancelFunc)) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "blocklist",
		Short: "List the sources the scan trap has blocklisted",
		Long: "List the sources the scan trap has blocklisted. A source is an IPv4 address (shown as a /32)\n" +
			"or an IPv6 /64: the firewall blocks a whole /64 at once.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := client(cmd)
			defer cancel()
			list, err := c.Blocklist(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []admin.BlockEntry{}
				}
				return encodeJSON(cmd.OutOrStdout(), list)
			}
			if len(list) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no source is blocklisted")
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SOURCE\tEXPIRES IN")
			for _, e := range list {
				fmt.Fprintf(w, "%s\t%s\n", printable(e.Prefix.String()), e.Expires.Round(time.Second))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: prefix (an IPv4 /32 or an IPv6 /64) and expires_ns")
	var all bool
	clear := &cobra.Command{
		Use:   "clear [ADDRESS|PREFIX...] | --all",
		Short: "Remove sources from the blocklist",
		Long: "Remove sources from the blocklist: every source an ADDRESS or PREFIX overlaps. An IPv6\n" +
			"address clears the whole /64 it lies in; a shorter prefix clears every /64 inside it.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return errors.New("name the addresses or prefixes to clear, or --all")
			}
			for _, a := range args {
				if _, err := admin.ParseSource(a); err != nil {
					return err
				}
			}
			c, ctx, cancel := client(cmd)
			defer cancel()
			n, err := c.Unblock(ctx, args, all)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blocklist entries\n", n)
			return nil
		},
	}
	clear.Flags().BoolVar(&all, "all", false, "clear every entry")
	cmd.AddCommand(clear)
	return cmd
}

func printDifferences(w io.Writer, diffs []string) {
	fmt.Fprintln(w, "WARNING: the kernel differs from the compiled policy (the daemon restores it within seconds):")
	for _, d := range diffs {
		fmt.Fprintln(w, "  -", printable(d))
	}
}

// printCounters prints one line per target.
func printCounters(out io.Writer, v admin.CountersView) {
	fmt.Fprintf(out, "per-target counters since %s (%s)\n", v.Since.Format(time.RFC3339), time.Since(v.Since).Round(time.Second))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tSENT PKTS\tSENT BYTES\tRECEIVED PKTS\tRECEIVED BYTES\tBLOCKED PKTS\tBLOCKED BYTES")
	for _, t := range v.Targets {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", printable(t.Target),
			t.Sent.Packets, t.Sent.Bytes, t.Received.Packets, t.Received.Bytes, t.Blocked.Packets, t.Blocked.Bytes)
	}
	w.Flush()
}
