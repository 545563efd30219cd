package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/adminclient"
)

func newCA(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The bastion's SSH certificate authority, for targets with ssh_certificates",
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the CA's public key, the line machines put in TrustedUserCAKeys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := adminclient.NewClient(*socket).CA(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), printable(info.PublicKey))
			fmt.Fprintln(cmd.ErrOrStderr(), "On each machine with ssh_certificates: true, put this line in a file "+
				"(say /etc/ssh/bastiond_ca.pub), set `TrustedUserCAKeys /etc/ssh/bastiond_ca.pub` in sshd_config, and reload sshd.")
			return nil
		},
	}
	cmd.AddCommand(show)
	return cmd
}
