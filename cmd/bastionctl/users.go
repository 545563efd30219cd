package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newUsers(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage the bastion's local accounts",
		Long: `Manage the bastion's local accounts: passwords (argon2id hashes), roles
granted on top of the configuration, the TOTP second factor, lockouts.
Passwords are read from the terminal without echo, or from standard input
with --password-stdin; they never appear on the command line.`,
	}
	client := func() *adminclient.Client { return adminclient.NewClient(*socket) }
	var asJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List accounts with their roles, second factor and lockout", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			us, err := client().Users(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), us)
			}
			printUsers(cmd.OutOrStdout(), us)
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var stdin bool
	var roles []string
	add := &cobra.Command{
		Use: "add NAME", Short: "Create an account", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := newPassword(cmd, stdin)
			if err != nil {
				return err
			}
			if err := client().UserChange(cmd.Context(), args[0], "", admin.UserRequest{Password: pw, Roles: roles}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s added\n", args[0])
			return nil
		},
	}
	add.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	add.Flags().StringSliceVar(&roles, "role", nil, "grant a role (repeatable)")

	passwd := &cobra.Command{
		Use: "passwd NAME", Short: "Set a new password; ends the user's web sessions and revokes their API tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := newPassword(cmd, stdin)
			if err != nil {
				return err
			}
			if err := client().UserChange(cmd.Context(), args[0], "password", admin.UserRequest{Password: pw}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed; their web sessions and API tokens are ended\n", args[0])
			return nil
		},
	}
	passwd.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")

	simple := func(use, action, short, done string) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := client().UserChange(cmd.Context(), args[0], action, admin.UserRequest{}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "user %s %s\n", args[0], done)
				return nil
			},
		}
	}
	roleChange := func(use, action, short, done string) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME ROLE...", Short: short, Args: cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := client().UserChange(cmd.Context(), args[0], action, admin.UserRequest{Roles: args[1:]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "user %s %s %s\n", args[0], done, strings.Join(args[1:], ", "))
				return nil
			},
		}
	}
	cmd.AddCommand(list, add, passwd,
		newDisable(client),
		simple("enable", "enable", "Enable a disabled account (its API tokens were revoked at disable)", "enabled"),
		simple("unlock", "unlock", "Clear a lockout after repeated failed sign-ins", "unlocked"),
		simple("delete", "delete", "Delete an account and its API tokens", "deleted"),
		roleChange("grant", "grant", "Grant roles defined in access.roles to a user", "granted"),
		roleChange("revoke", "revoke", "Take back roles granted with grant", "no longer granted"),
		newTOTP(client),
		simple("reset-passkeys", "passkeys/reset", "Remove every passkey of a user (a lost device); the user adds new ones on the portal's Security page",
			"has no passkeys now"),
	)
	return cmd
}

func newDisable(client func() *adminclient.Client) *cobra.Command {
	return &cobra.Command{
		Use: "disable NAME", Short: "Disable an account: end its web sessions and live sessions, revoke its API tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := client().DisableUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s disabled: %s revoked, %s and %s ended\n", args[0],
				count(e.Tokens, "API token"), count(e.WebSessions, "web session"), count(e.Sessions, "live session"))
			return nil
		},
	}
}

// count is "1 thing" or "n things".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func newTOTP(client func() *adminclient.Client) *cobra.Command {
	var reset bool
	var code string
	cmd := &cobra.Command{
		Use:   "totp NAME",
		Short: "Enrol a user's authenticator app (QR code), or --reset to remove it",
		Long: `Enrol a user's authenticator app: prints a QR code (and the secret for
typing by hand), then asks for the code the app shows, and only then makes
TOTP required at the user's sign-in. --reset removes the second factor (a
lost phone).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, name := cmd.Context(), args[0]
			if reset {
				if err := client().UserChange(ctx, name, "totp/reset", admin.UserRequest{}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "second factor of %s removed\n", name)
				return nil
			}
			e, err := client().BeginTOTP(ctx, name)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Scan this with the authenticator app of %s:\n\n%s\n", name, printableText(e.QR))
			fmt.Fprintf(out, "Or enter the secret by hand: %s\n\n", printable(e.Secret))
			if code == "" {
				fmt.Fprint(out, "Code shown by the app: ")
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("no code read; the enrolment is left pending: %w", err)
				}
				code = strings.TrimSpace(line)
			}
			if err := client().UserChange(ctx, name, "totp/confirm", admin.UserRequest{Code: code}); err != nil {
				return err
			}
			fmt.Fprintf(out, "TOTP enrolled: %s now needs a code at sign-in\n", name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "remove the user's second factor")
	cmd.Flags().StringVar(&code, "code", "", "the app's current code (else asked for)")
	return cmd
}

func printUsers(out io.Writer, us []admin.UserInfo) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "USER\tSTATE\tTOTP\tROLES\tTOKENS\tPASSWORD SET")
	for _, u := range us {
		state := "active"
		switch {
		case u.Disabled:
			state = "disabled"
		case time.Now().Before(u.LockedUntil):
			state = "locked until " + u.LockedUntil.Local().Format("15:04")
			if len(u.LockedBy) > 0 {
				state += " by " + printable(strings.Join(u.LockedBy, ","))
			}
		}
		totp := "-"
		if u.TOTP {
			totp = "yes"
		}
		roles := strings.Join(u.Roles, ",")
		if roles == "" {
			roles = "(none)"
		}
		// An SSO account has no password: its column says which provider
		// signs it in, and when it last did.
		pw := u.PasswordChanged.Local().Format("2006-01-02")
		if u.Provider != "" {
			totp = "-"
			pw = "sso:" + printable(u.Provider) + ", signed in " + u.LastSignIn.Local().Format("2006-01-02")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", printable(u.Name), state, totp, printable(roles), u.Tokens, pw)
	}
	w.Flush()
}

// newPassword reads a new password: one line of standard input with
// --password-stdin, else twice from the terminal without echo.
func newPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	if fromStdin {
		pw, err := passwordLine(bufio.NewReader(cmd.InOrStdin()))
		if err != nil {
			return "", err
		}
		if pw == "" {
			return "", errors.New("no password on standard input")
		}
		return pw, nil
	}
	pw, err := readSecret("New password: ")
	if err != nil {
		return "", err
	}
	again, err := readSecret("Again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("the passwords differ")
	}
	return pw, nil
}

// readSecret prompts on the terminal and reads without echo.
func readSecret(prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("standard input is not a terminal: use --password-stdin")
	}
	fmt.Fprint(os.Stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	return string(b), err
}

func newTokens(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "List and revoke API tokens (those bastionctl login obtains)",
	}
	var user string
	var asJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List API tokens, of every user or of --user", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ts, err := adminclient.NewClient(*socket).Tokens(cmd.Context(), user)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), ts)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tUSER\tSCOPES\tEXPIRES\tFROM\tCOMMENT")
			for _, t := range ts {
				exp := t.Expires.Local().Format(time.DateTime)
				if time.Now().After(t.Expires) {
					exp += " (expired)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(t.ID), printable(t.User), printable(strings.Join(t.Scopes, ",")), exp,
					printable(t.Source), printable(t.Comment))
			}
			return w.Flush()
		},
	}
	list.Flags().StringVar(&user, "user", "", "only this user's tokens")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use: "revoke [ID] [--user NAME]", Short: "Revoke one token, or every token of --user", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			if (id == "") == (user == "") {
				return errors.New("give a token ID or --user NAME")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			n, err := adminclient.NewClient(*socket).RevokeTokens(ctx, id, user)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d token(s) revoked\n", n)
			return nil
		},
	}
	revoke.Flags().StringVar(&user, "user", "", "revoke every token of this user")
	cmd.AddCommand(list, revoke)
	return cmd
}
