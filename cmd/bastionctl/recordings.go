package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newRecordings(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "recordings [--json]",
		Short: "List the session recordings; 'recordings export ID' and 'recordings verify [ID...]'",
		Long: "List every recording in the recordings directory (SSH and RDP, compressed, and the plain SSH ones of\n" +
			"earlier releases), oldest first, with its session as the audit trail recorded it. SIZE is on disk.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			list, err := adminclient.NewClient(*socket).Recordings(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd.OutOrStdout(), list)
			}
			printRecordings(cmd.OutOrStdout(), list)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list := &cobra.Command{Use: "list [--json]", Short: "List the session recordings", Args: cobra.NoArgs, RunE: cmd.RunE}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var out string
	var raw bool
	export := &cobra.Command{
		Use:   "export ID [-o FILE] [--raw]",
		Short: "Write a recording, decompressed (an asciicast for SSH) or as stored with --raw; the export is audited",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var w io.Writer = cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, err := adminclient.NewClient(*socket).ExportRecording(cmd.Context(), args[0], raw, w)
			if err != nil {
				if out != "" && out != "-" {
					os.Remove(out)
				}
				return err
			}
			if out != "" && out != "-" {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d bytes\n", filepath.Clean(out), n)
			}
			return nil
		},
	}
	export.Flags().StringVarP(&out, "output", "o", "", "write to FILE (created, never overwritten) instead of standard output")
	export.Flags().BoolVar(&raw, "raw", false, "the file as stored (gzip for .cast.gz and .rdp.gz), as `recordings verify` hashes it")

	verify := &cobra.Command{
		Use:   "verify [ID...]",
		Short: "Check recordings against the SHA-256 their session's end record holds in the audit trail",
		Long: "Check each recording's file (all of them without IDs, and every recording the audit trail names)\n" +
			"against the SHA-256 written in its session's end record when the recording was closed. Outcomes: ok,\n" +
			"mismatch (the file changed), missing (the trail names a file that is gone and retention did not remove\n" +
			"it), removed (by retention), no_record (no hash in the trail: an older release's recording, or a\n" +
			"session still open). Exits 1 on any mismatch or missing file.",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			checks, err := adminclient.NewClient(*socket).VerifyRecordings(ctx, args)
			if err != nil {
				return err
			}
			if asJSON {
				if err := encodeJSON(cmd.OutOrStdout(), checks); err != nil {
					return err
				}
			} else {
				printChecks(cmd.OutOrStdout(), checks)
			}
			bad := 0
			for _, c := range checks {
				if c.Outcome == admin.CheckMismatch || c.Outcome == admin.CheckMissing {
					bad++
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d recordings do not match the audit trail", bad, len(checks))
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(list, export, verify)
	return cmd
}

func printRecordings(out io.Writer, list []admin.RecordingInfo) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no recordings")
		return
	}
	// A cluster's recordings say which instance made them.
	clustered := slices.ContainsFunc(list, func(r admin.RecordingInfo) bool { return r.Instance != "" })
	instance := func(r admin.RecordingInfo) string {
		if !clustered {
			return ""
		}
		return printable(orDash(r.Instance)) + "\t"
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if clustered {
		fmt.Fprintln(w, "ID\tINSTANCE\tUSER\tTARGET\tPROTOCOL\tSTART\tDURATION\tSIZE")
	} else {
		fmt.Fprintln(w, "ID\tUSER\tTARGET\tPROTOCOL\tSTART\tDURATION\tSIZE")
	}
	var total int64
	for _, r := range list {
		user, target, start := orDash(r.User), orDash(r.Target), "-"
		if r.Login != "" {
			target = r.Login + "@" + target
		}
		if !r.Start.IsZero() {
			start = r.Start.UTC().Format("2006-01-02 15:04:05Z")
		}
		fmt.Fprintf(w, "%s\t%s%s\t%s\t%s\t%s\t%s\t%s\n", printable(r.ID), instance(r), printable(user), printable(target), printable(r.Protocol),
			start, r.Duration.Round(time.Second), humanBytes(r.Size))
		total += r.Size
	}
	w.Flush()
	fmt.Fprintf(out, "%d recordings, %s\n", len(list), humanBytes(total))
}

func printChecks(out io.Writer, checks []admin.RecordingCheck) {
	if len(checks) == 0 {
		fmt.Fprintln(out, "no recordings")
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tOUTCOME\tDETAIL")
	for _, c := range checks {
		detail := ""
		switch c.Outcome {
		case admin.CheckMismatch:
			detail = "file sha256:" + c.Got + ", end record sha256:" + c.Want
		case admin.CheckMissing, admin.CheckRemoved:
			detail = c.Path
		case admin.CheckOK:
			detail = "sha256:" + c.Got
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", printable(c.ID), printable(c.Outcome), printable(detail))
	}
	w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
