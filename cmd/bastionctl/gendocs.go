//go:build gendocs

package main

// Built with -tags gendocs (make package does), `bastionctl gendocs DIR`
// writes the man pages of every command into DIR/man1 (bastionctl.1,
// bastionctl-login.1, ...) and the shell completions into DIR/completions
// (bastionctl.bash, _bastionctl for zsh, bastionctl.fish), all from the
// cobra command tree, and exits. bastionctl built without the tag has no
// such command and links no man page code.

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra/doc"

	"github.com/bastiond/bastiond/internal/version"
)

func init() {
	if len(os.Args) != 3 || os.Args[1] != "gendocs" {
		return
	}
	if err := writeDocs(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "bastionctl gendocs:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// writeDocs writes the man pages and completions under dir. The pages'
// date is SOURCE_DATE_EPOCH's when set, so the same commit gives the same
// pages.
func writeDocs(dir string) error {
	date, err := version.SourceDate()
	if err != nil {
		return err
	}
	root := newRoot()
	root.DisableAutoGenTag = true // the page's footer says the version and date already
	man, comp := filepath.Join(dir, "man1"), filepath.Join(dir, "completions")
	for _, d := range []string{man, comp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	header := &doc.GenManHeader{Title: "BASTIONCTL", Section: "1", Date: &date,
		Source: "bastionctl " + version.Version, Manual: "bastiond manual"}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	for name, gen := range map[string]func(string) error{
		"bastionctl.bash": func(f string) error { return root.GenBashCompletionFileV2(f, true) },
		"_bastionctl":     root.GenZshCompletionFile,
		"bastionctl.fish": func(f string) error { return root.GenFishCompletionFile(f, true) },
	} {
		if err := gen(filepath.Join(comp, name)); err != nil {
			return fmt.Errorf("completion %s: %w", name, err)
		}
	}
	return nil
}
