package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newTargets(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "targets",
		Short: "The machines behind the bastion",
	}
	var asJSON bool
	discover := &cobra.Command{
		Use:   "discover [--json]",
		Short: "List hosts on the VNet that are not in the inventory",
		Long: "List the hosts the bastion's VNet interface has seen (its IPv4 and IPv6 neighbours and, on a bridge,\n" +
			"the MACs its ports learnt) whose addresses are not in the inventory. It reads the kernel's tables; it\n" +
			"does not probe the network, so a host shows once it has sent or been sent something.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			v, err := adminclient.NewClient(*socket).Discover(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), v)
			}
			printDiscovery(cmd.OutOrStdout(), v)
			return nil
		},
	}
	discover.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(discover)
	return cmd
}

func printDiscovery(out io.Writer, v admin.Discovery) {
	if len(v.Unknown) == 0 {
		fmt.Fprintf(out, "no unknown hosts on %s (%d entries read)\n", printable(v.Interface), v.Seen)
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MAC\tADDRESSES\tSTATE\tNOTE")
	for _, h := range v.Unknown {
		addrs := make([]string, len(h.Addrs))
		for i, a := range h.Addrs {
			addrs[i] = a.String()
		}
		var note []string
		if h.BridgeOnly {
			addrs = []string{"-"}
			note = append(note, "frames on the bridge only, no address known")
		}
		if len(h.Targets) > 0 {
			note = append(note, "also holds the address of "+strings.Join(h.Targets, ", "))
		}
		if allLinkLocal(h.Addrs) {
			note = append(note, "link-local only")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", printable(h.MAC), strings.Join(addrs, " "), printable(h.State), printable(strings.Join(note, "; ")))
	}
	w.Flush()
	hosts := "hosts"
	if len(v.Unknown) == 1 {
		hosts = "host"
	}
	fmt.Fprintf(out, "%d unknown %s on %s\n", len(v.Unknown), hosts, printable(v.Interface))
}

func allLinkLocal(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !a.IsLinkLocalUnicast() {
			return false
		}
	}
	return len(addrs) > 0
}
