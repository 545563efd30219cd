package main

import (
	"bufio"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/hostkeyfile"
)

func newHostKeys(socket *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hostkeys",
		Short: "Pin the SSH host keys and RDP certificates of targets: scan, pin, list, forget",
		Long: `The bastion connects to a target's SSH server only if it presents a host key
pinned for that target, and to its RDP server only if it presents the
certificate pinned for it. A key or certificate seen on a target with nothing
pinned is kept as pending until an admin pins it; one that differs from the
pinned ones refuses every session, with both fingerprints in the log.

To pin a new target: 'hostkeys scan TARGET', compare the fingerprints with
the machine's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it;
for RDP the SHA-256 of its certificate: openssl x509 -noout -fingerprint
-sha256, or certutil on Windows), then 'hostkeys pin TARGET'. Or pin the
machine's .pub file or certificate directly with 'hostkeys pin TARGET
--key-file FILE' or '--cert-file FILE'.`,
	}
	client := func() *adminclient.Client { return adminclient.NewClient(*socket) }

	var asJSON bool
	list := &cobra.Command{
		Use: "list [TARGET]", Short: "List pinned and pending host keys, of every target or of one", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 1 {
				target = targetArg(args[0])
			}
			keys, err := client().HostKeys(cmd.Context(), target)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), keys)
			}
			if len(keys) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no host keys seen or pinned")
				return nil
			}
			printHostKeys(cmd.OutOrStdout(), keys)
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var scanReq admin.ScanRequest
	scan := &cobra.Command{
		Use:   "scan TARGET [--pin] [--protocol ssh|rdp]",
		Short: "Collect the host keys and certificate a target's servers present; --pin pins them",
		Long: `Have the bastion connect to the target's SSH and RDP ports, as sessions do, and
collect every host key its SSH server has (ed25519, ECDSA, RSA) and the
certificate its RDP server presents. New ones are kept as pending. With --pin
they are pinned at once: trust on first use, for a network you trust right
now. --pin refuses a target that already has pinned keys and presents new
ones: pin those by fingerprint once checked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := client().ScanHostKeys(cmd.Context(), targetArg(args[0]), scanReq)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), keys)
			}
			printHostKeys(cmd.OutOrStdout(), keys)
			if pending := countState(keys, admin.KeyPending); pending > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d key(s) pending: compare them with the machine's own "+
					"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub, or the SHA-256 of its RDP certificate), "+
					"then run: bastionctl hostkeys pin %s\n", pending, printable(targetArg(args[0])))
			}
			return nil
		},
	}
	scan.Flags().BoolVar(&scanReq.Pin, "pin", false, "pin the keys found")
	scan.Flags().StringVar(&scanReq.Protocol, "protocol", "", "scan only this protocol's keys: ssh or rdp (default: every one the target offers)")
	scan.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var keyFile, certFile string
	pin := &cobra.Command{
		Use:   "pin TARGET [FINGERPRINT...] [--key-file FILE | --cert-file FILE]",
		Short: "Pin pending keys (all, or those named), or the keys or certificate in a file",
		Long: `Pin keys of TARGET: the pending ones named by fingerprint, every pending one if
none is named, the SSH host keys in FILE (a .pub file, or authorized_keys or
known_hosts lines; '-' reads standard input), for instance
    ssh admin@vm1 cat /etc/ssh/ssh_host_ed25519_key.pub | bastionctl hostkeys pin vm1 --key-file -
or the RDP server certificate in FILE (PEM or DER) with --cert-file.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, fingerprints := targetArg(args[0]), args[1:]
			var req admin.PinRequest
			switch {
			case (keyFile != "" || certFile != "") && len(fingerprints) > 0, keyFile != "" && certFile != "":
				return errors.New("give fingerprints, --key-file or --cert-file: only one of them")
			case certFile != "":
				data, err := readFile(certFile, cmd.InOrStdin())
				if err != nil {
					return err
				}
				if _, err := hostkeyfile.ParseCertificate(data); err != nil {
					return fmt.Errorf("%s: %w", certFile, err)
				}
				req.Certificates = []string{string(data)}
			case keyFile != "":
				lines, err := readKeyFile(keyFile, cmd.InOrStdin())
				if err != nil {
					return err
				}
				req.Keys = lines
			default:
				req.Fingerprints = fingerprints
			}
			keys, err := client().PinHostKeys(cmd.Context(), target, req)
			if err != nil {
				return err
			}
			for _, k := range keys {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: pinned %s %s\n", printable(target), printable(keyType(k)), printable(k.Fingerprint))
			}
			return nil
		},
	}
	pin.Flags().StringVar(&keyFile, "key-file", "", "pin the SSH public keys in this file ('-': standard input)")
	pin.Flags().StringVar(&certFile, "cert-file", "", "pin the RDP certificate in this file, PEM or DER ('-': standard input)")

	forget := &cobra.Command{
		Use:   "forget TARGET [FINGERPRINT]",
		Short: "Forget one host key of a target, or all of them (the next session then pins nothing)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fingerprint := ""
			if len(args) == 2 {
				fingerprint = args[1]
			}
			keys, err := client().ForgetHostKeys(cmd.Context(), targetArg(args[0]), fingerprint)
			if err != nil {
				return err
			}
			for _, k := range keys {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: forgot %s %s (%s)\n", printable(targetArg(args[0])), printable(keyType(k)), printable(k.Fingerprint), printable(k.State))
			}
			return nil
		},
	}
	cmd.AddCommand(list, scan, pin, forget)
	return cmd
}

// readKeyFile returns the key lines of path ("-": stdin), checked here so
// that a mistake is reported with its line number.
func readKeyFile(path string, stdin io.Reader) ([]string, error) {
	in := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	var lines []string
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := hostkeyfile.ParseSSHKey(line); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%s: no public key in it", path)
	}
	return lines, nil
}

// readFile reads path, or stdin for "-".
func readFile(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(stdin, 1<<20))
	}
	return os.ReadFile(path)
}

// keyType is what a key is: its SSH algorithm, or for an RDP certificate
// "rdp-cert" and what it says about itself.
func keyType(k admin.HostKey) string {
	if k.Algorithm != "" {
		return k.Algorithm
	}
	if k.Kind != admin.KeyRDP {
		return k.Kind
	}
	der, err := base64.StdEncoding.DecodeString(k.Data)
	if err != nil {
		return "rdp-cert"
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "rdp-cert"
	}
	return fmt.Sprintf("rdp-cert (%s, until %s)", c.Subject.CommonName, c.NotAfter.Format(time.DateOnly))
}

func countState(keys []admin.HostKey, state string) int {
	n := 0
	for _, k := range keys {
		if k.State == state {
			n++
		}
	}
	return n
}

func printHostKeys(out io.Writer, keys []admin.HostKey) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tTYPE\tFINGERPRINT\tSTATE\tSEEN AT\tFIRST SEEN\tPINNED")
	for _, k := range keys {
		seenAt := k.SeenAt
		if seenAt == "" {
			seenAt = "-"
		}
		pinned := "-"
		if k.State == admin.KeyPinned {
			pinned = k.Pinned.Local().Format(time.DateTime) + " by " + k.PinnedBy
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(k.Target), printable(keyType(k)), printable(k.Fingerprint), printable(k.State),
			printable(seenAt), k.FirstSeen.Local().Format(time.DateTime), printable(pinned))
	}
	w.Flush()
}

// targetArg is a target as the bastion names it: an address inside a
// network in one canonical form (2001:db8::5 for [2001:db8::5]), as its
// sessions pin the keys.
func targetArg(s string) string { return tunnelwire.CanonicalTarget(s) }
