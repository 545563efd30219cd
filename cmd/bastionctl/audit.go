package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bastiond/bastiond/internal/audit"
)

// Exit codes of `bastionctl audit verify`.
const (
	exitBroken     = 1 // the trail does not verify
	exitUnreadable = 2 // a file could not be read
)

// exitError is an error that ends bastionctl with a code of its own.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the code bastionctl ends with for err: 1 unless it says.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

func newAudit(socket *string, goos string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the audit trail; read its events by time range",
	}
	cmd.AddCommand(newAuditVerify(), adminCommand(newAuditEvents(socket), goos))
	return cmd
}

func newAuditVerify() *cobra.Command {
	var allowRestarts bool
	cmd := &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check the hash chain of audit files, oldest first",
		Long: "Check that every line of the audit trail carries the SHA-256 of the line before it, across the files\n" +
			"given (oldest first: audit.jsonl.2.gz audit.jsonl.1 audit.jsonl, as logrotate leaves them; .gz files are\n" +
			"read compressed). An edited, deleted, inserted or reordered line, or a file missing between two, breaks\n" +
			"the chain at the first line after it.\n\n" +
			"Prints how many lines were read and checked and the hash of the last line (compare it with a copy kept\n" +
			"elsewhere, a collector, to see that nothing was cut off the end). Exits 0 when the trail verifies, 1 at\n" +
			"the first broken line (file:line: why), 2 when a file cannot be read.\n\n" +
			"A file after the first that starts a new trail instead of continuing the one before is reported as a\n" +
			"restart, and fails the check too: nothing ties it to the file before, so lines cut from the end of that\n" +
			"one would not show. The daemon starts a new trail when it lost the head of the last one (it restarted\n" +
			"after logrotate moved the file, or could not read its tail); check the files' order and the restart's\n" +
			"reason, and accept it with --allow-restarts.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, names []string) error {
			return verifyTrail(cmd.OutOrStdout(), names, allowRestarts)
		},
	}
	cmd.Flags().BoolVar(&allowRestarts, "allow-restarts", false, "accept files that start a new trail (after checking why)")
	return cmd
}

// verifyTrail runs audit.Verify over the files names and prints what it
// found.
func verifyTrail(out io.Writer, names []string, allowRestarts bool) error {
	var files []audit.File
	for _, name := range names {
		r, closeFile, err := openTrailFile(name)
		if err != nil {
			return &exitError{exitUnreadable, err}
		}
		defer closeFile()
		files = append(files, audit.File{Name: name, R: r})
	}
	rep, err := audit.Verify(files...)
	if err != nil {
		return &exitError{exitUnreadable, err}
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "files\t%d\n", len(files))
	fmt.Fprintf(w, "lines read\t%d\n", rep.Lines)
	fmt.Fprintf(w, "chained\t%d\n", rep.Chained)
	fmt.Fprintf(w, "legacy\t%d (version 1 records before the chain: not checked)\n", rep.Legacy)
	if rep.Continues != "" {
		fmt.Fprintf(w, "continues\t%s (the head of a file before the first one given)\n", rep.Continues)
	}
	for _, r := range rep.Restarts {
		fmt.Fprintf(w, "RESTART\t%s\n", printable(r.Error()))
	}
	if rep.Broken != nil {
		fmt.Fprintf(w, "BROKEN\t%s\n", printable(rep.Broken.Error()))
		w.Flush()
		return &exitError{exitBroken, fmt.Errorf("the audit trail does not verify: %s", printable(rep.Broken.Error()))}
	}
	head := rep.Head.String()
	if head == "" {
		head = "(no line)"
	}
	fmt.Fprintf(w, "head\t%s\n", head)
	if len(rep.Restarts) > 0 && !allowRestarts {
		w.Flush()
		return &exitError{exitBroken, fmt.Errorf("the audit trail restarts at %s: check why, then accept it with --allow-restarts",
			printable(rep.Restarts[0].File+":"+strconv.Itoa(rep.Restarts[0].Line)))}
	}
	fmt.Fprintln(w, "OK")
	return w.Flush()
}

// openTrailFile opens one file of a trail, through gzip when it is
// compressed (by its magic number, whatever its name).
func openTrailFile(name string) (io.Reader, func(), error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("audit verify: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, nil, fmt.Errorf("audit verify: %s is a directory, not an audit file", name)
	}
	br := bufio.NewReader(f)
	magic, err := br.Peek(2)
	if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return br, func() { f.Close() }, nil // plain (or empty) JSON lines
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("audit verify: %s: %w", name, err)
	}
	return zr, func() { zr.Close(); f.Close() }, nil
}
