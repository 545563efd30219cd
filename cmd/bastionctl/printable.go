package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Everything bastionctl prints from the daemon or the bastion (user names,
// token comments, targets, logins, certificate names, error messages) may
// come from someone else: a user who named a token, a machine that chose
// its certificate's name. A terminal acts on control characters in it
// (erase lines, set the title, write the clipboard with OSC 52) and bidi
// controls reorder what the admin reads, so it is shown escaped.

// printable returns s with every C0 and C1 control character, DEL, bidi
// control and invalid UTF-8 byte written as a Go escape (\x1b, \u202e):
// safe to print in a terminal, on one line.
func printable(s string) string { return escapeControls(s, false) }

// printableText is printable for multi-line text (a ruleset, a script, a
// QR code): newlines and tabs stay as they are.
func printableText(s string) string { return escapeControls(s, true) }

func escapeControls(s string, keepLayout bool) string {
	i := strings.IndexFunc(s, func(r rune) bool { return needsEscape(r, keepLayout) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		switch {
		case r == utf8.RuneError:
			// A lone byte that is not UTF-8 (0x9b is CSI to an 8-bit
			// terminal) or U+FFFD itself: show both as the replacement
			// character's escape, never as raw bytes.
			b.WriteString(`\ufffd`)
		case !needsEscape(r, keepLayout):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// needsEscape reports whether a terminal would act on r rather than show
// it.
func needsEscape(r rune, keepLayout bool) bool {
	switch {
	case keepLayout && (r == '\n' || r == '\t'):
		return false
	case r < 0x20, r >= 0x7f && r <= 0x9f, r == utf8.RuneError:
		return true
	}
	return isBidiControl(r)
}

// isBidiControl reports whether r is a bidi mark, embedding, override or
// isolate.
func isBidiControl(r rune) bool {
	switch {
	case r == '\u061c', r == '\u200e', r == '\u200f':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// printableError is err's message, escaped.
func printableError(err error) string { return printable(err.Error()) }

// encodeJSON prints v as indented JSON. encoding/json escapes C0 controls
// but writes DEL, C1 controls and bidi controls as they are; they can only
// stand inside JSON strings, so they are rewritten as \u escapes there.
func encodeJSON(out io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	data := buf.String()
	if strings.IndexFunc(data, func(r rune) bool { return needsEscape(r, true) }) < 0 {
		_, err := io.WriteString(out, data)
		return err
	}
	var b strings.Builder
	for _, r := range data {
		if needsEscape(r, true) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}
