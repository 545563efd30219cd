package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/adminclient"
)

func newUpgrade(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Replace the running bastiond with the binary now installed at its path, keeping every session",
		Long: "Install the new binary first (same path, e.g. make install), then run this. The new process takes over\n" +
			"the sockets and serves new sessions; the old one keeps serving its live sessions until they end or\n" +
			"limits.upgrade_grace passes. If the new binary cannot start, the old one goes on serving and this says why.\n" +
			"systemctl kill -s USR2 --kill-whom=main bastiond does the same without waiting for the outcome.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 90*time.Second)
			defer cancel()
			res, err := adminclient.NewClient(*socket).Upgrade(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "upgraded: %s now runs as pid %d; pid %d serves its %d live sessions until they end\n",
				printable(res.Binary), res.NewPID, res.OldPID, res.Sessions)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
