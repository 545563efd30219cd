//go:build gendocs

package main

// Built with -tags gendocs (make package does), `bastiond gendocs DIR`
// writes the man page bastiond.8 into DIR, generated from the flag set of
// newFlags and then exits; the daemon built without the tag has no such
// command and links no man page code.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"

	"github.com/bastiond/bastiond/internal/version"
)

func init() {
	if len(os.Args) != 3 || os.Args[1] != "gendocs" {
		return
	}
	if err := writeMan(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "bastiond gendocs:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// writeMan writes dir/bastiond.8. Its date is SOURCE_DATE_EPOCH's when set,
// so that the same commit gives the same page.
func writeMan(dir string) error {
	date, err := version.SourceDate()
	if err != nil {
		return err
	}
	var o options
	page := md2man.Render([]byte(manPage(newFlags(&o), version.Version, date)))
	return os.WriteFile(filepath.Join(dir, "bastiond.8"), page, 0o644)
}

// manPage is the page in go-md2man's Markdown: the flags come from fs, the
// rest says where the daemon's files are and points at bastionctl and the
// example configuration.
func manPage(fs *flag.FlagSet, ver string, date time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%% BASTIOND 8 %q %q \"bastiond manual\"\n\n", date.Format("Jan 2006"), "bastiond "+ver)
	b.WriteString("# NAME\nbastiond - the bastion daemon: SSH and RDP sessions over TLS and QUIC on port 443\n\n")
	b.WriteString("# SYNOPSIS\n**bastiond**")
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		if name == "" {
			fmt.Fprintf(&b, " [**-%s**]", f.Name)
		} else {
			fmt.Fprintf(&b, " [**-%s** *%s*]", f.Name, name)
		}
	})
	b.WriteString("\n\n# DESCRIPTION\n" +
		"**bastiond** is the only way into the machines of a private network: users reach their SSH and RDP sessions " +
		"over TLS and QUIC on port 443, from a browser or through **bastionctl tunnel**, and the daemon programs " +
		"nftables so that the machines answer SSH and RDP only to it. It runs under systemd as **bastiond.service**, " +
		"started by **bastiond.socket**, which passes it TCP and UDP port 443. Its configuration is one YAML file; " +
		"the commented reference is /usr/share/doc/bastiond/bastiond.example.yaml.\n\n" +
		"The firewall stays closed when the daemon stops or dies: only **bastiond -cleanup** removes its tables.\n\n")
	b.WriteString("# OPTIONS\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "**-%s**", f.Name)
		if name != "" {
			fmt.Fprintf(&b, " *%s*", name)
		}
		fmt.Fprintf(&b, "\n: %s", escape(usage))
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(&b, " (default %s)", escape(f.DefValue))
		}
		b.WriteString("\n\n")
	})
	b.WriteString("# FILES\n" +
		"/etc/bastiond/bastiond.yaml\n: the configuration\n\n" +
		"/var/lib/bastiond\n: the state: users, pinned host keys, the SSH CA, recordings\n\n" +
		"/var/log/bastiond\n: the audit log\n\n" +
		"/run/bastiond/admin.sock\n: the admin socket that **bastionctl** talks to\n\n")
	b.WriteString("# SEE ALSO\n**bastionctl**(1), **systemctl**(1), **systemd.socket**(5)\n")
	return b.String()
}

// escape keeps Markdown from reading a flag's text as emphasis.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `_`, `\_`).Replace(s)
}
