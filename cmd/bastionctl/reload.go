package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/adminclient"
)

func newReload(socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Reload the configuration file, as SIGHUP does, and say whether it was taken",
		Long: "The daemon reads its configuration file again and swaps it in only when all of it is good: a refused\n" +
			"file leaves the running configuration in force, and this prints why (file:line) and exits 1. Either way\n" +
			"the audit trail records it (config_reloaded or config_refused) under your name.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			res, err := adminclient.NewClient(*socket).Reload(ctx)
			if err != nil {
				return err
			}
			if !res.OK {
				return errors.New("configuration refused, the running one stays in force:\n" + printableText(res.Error))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return nil
		},
	}
}
