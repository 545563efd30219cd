package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
)

// File is one file of a trail for Verify.
type File struct {
	Name string
	R    io.Reader
}

// Report is what Verify found.
type Report struct {
	// Lines is how many lines were read, over all files.
	Lines int
	// Chained is how many of them were checked against the line before.
	Chained int
	// Legacy is how many lines at the start of the first file predate the
	// chain (version 1 session records): they cannot be checked.
	Legacy int
	// Continues is set when the first file continues a file not given:
	// its first line's prev, which only that file could confirm.
	Continues string
	// Head is the hash of the last line: compare it with a copy kept
	// elsewhere (a collector) to see that nothing was cut off the end.
	Head Hash
	// Broken is the first line that does not verify, or nil.
	Broken *Break
	// Restarts are the files after the first that start a new trail (an
	// audit_chain_started line with an empty prev) instead of continuing
	// the file before: the daemon lost the trail's head there (a restart
	// after logrotate moved the file, an unreadable tail), or the files
	// are out of order. Nothing ties such a file to the one before it, so
	// lines cut from the end of that one would not show.
	Restarts []Break
}

// Break locates the first line that does not verify.
type Break struct {
	File   string
	Line   int // 1-based
	Reason string
}

func (b *Break) Error() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason) }

// Verify reads the files of a trail, oldest first, and checks that every
// line carries the hash of the line before it (across files: the first line
// of a file continues the last line of the one before). It stops at the
// first line that does not verify, which an edited, deleted, inserted or
// reordered line, or a cut between files, always makes. A read error is
// returned as an error; a line that does not verify is in Report.Broken.
func Verify(files ...File) (Report, error) {
	var rep Report
	var prev Hash
	started := false // a chained line has been read
	for fi, f := range files {
		sc := bufio.NewScanner(f.R)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		n := 0
		for sc.Scan() {
			n++
			rep.Lines++
			line := sc.Bytes()
			brk := func(format string, a ...any) (Report, error) {
				rep.Broken = &Break{File: f.Name, Line: n, Reason: fmt.Sprintf(format, a...)}
				return rep, nil
			}
			var l struct {
				V      int     `json:"v"`
				Event  string  `json:"event"`
				Reason string  `json:"reason"`
				Prev   *string `json:"prev"`
			}
			if err := json.Unmarshal(line, &l); err != nil {
				return brk("not a JSON object (a torn or edited line): %v", err)
			}
			if l.Prev == nil {
				if !started && fi == 0 && l.V < Version {
					rep.Legacy++ // before the chain: nothing to check it against
					prev = HashLine(line)
					continue
				}
				return brk("no prev field: the line was not written by bastiond's chained writer")
			}
			p, err := ParseHash(*l.Prev)
			if err != nil {
				return brk("%v", err)
			}
			switch {
			case !started && rep.Legacy == 0:
				// The first line read: nothing before it to compare with.
				if l.Event != ChainStarted {
					return brk("the first line is a %s event, not %s: lines before it are missing", l.Event, ChainStarted)
				}
				if p != Zero {
					rep.Continues = p.String()
				}
			case l.Event == ChainStarted && p == Zero && n == 1:
				// A new trail starts with this file (the daemon lost the
				// head of the last one): said, and checked from here on.
				rep.Continues = ""
				why := "a new trail starts here, not linked to the line before"
				if l.Reason != "" {
					why += " (" + l.Reason + ")"
				}
				rep.Restarts = append(rep.Restarts, Break{File: f.Name, Line: n, Reason: why})
			case p != prev:
				if n == 1 {
					return brk("does not continue the last line of %s: a file between them is missing, or that file was cut", files[fi-1].Name)
				}
				return brk("does not follow line %d: a line was edited, deleted, inserted or moved", n-1)
			default:
				rep.Chained++
			}
			started = true
			prev = HashLine(line)
		}
		if err := sc.Err(); err != nil {
			return rep, fmt.Errorf("audit: read %s: %w", f.Name, err)
		}
	}
	rep.Head = prev
	return rep, nil
}
