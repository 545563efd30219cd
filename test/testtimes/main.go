// Command testtimes reads `go test -json` on its standard input and prints
// what `go test` would (a package's whole output when it fails, its "ok"
// line when it passes), then where the time went: the slowest tests, and
// for the lab tiers, which take turns on the one lab, how long each waited
// for it and how long it held it. `make test` pipes through it so that CI's
// log says which tests to make faster before the run nears its budget.
//
// It never decides the outcome: the exit status is go test's (pipefail).
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output events
	Test       string
	Elapsed    float64
	Output     string
}

type result struct {
	name    string
	elapsed time.Duration
}

func main() {
	s := newSummary(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		s.line(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testtimes:", err)
	}
	s.report()
}

type summary struct {
	w      io.Writer
	output map[string][]chunk // package -> output so far, but passed tests'
	tests  []result
	lab    []string // the lab tiers' own lines about the lab
}

// chunk is a line of output and the test that wrote it ("" for the
// package's own).
type chunk struct{ test, text string }

func newSummary(w io.Writer) *summary {
	return &summary{w: w, output: map[string][]chunk{}}
}

func (s *summary) line(b []byte) {
	var e event
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil {
		fmt.Fprintf(s.w, "%s\n", b) // not test2json's: go's own messages
		return
	}
	switch {
	case e.Action == "build-output":
		fmt.Fprint(s.w, e.Output)
	case e.Action == "output":
		if e.Test != "" && isFraming(e.Output) {
			return // -json runs tests verbosely; go test alone shows no === lines
		}
		s.output[e.Package] = append(s.output[e.Package], chunk{e.Test, e.Output})
		if e.Test == "" && strings.HasPrefix(e.Output, "lab: ") {
			s.lab = append(s.lab, fmt.Sprintf("%s %s", short(e.Package), strings.TrimSuffix(e.Output, "\n")))
		}
	case e.Test != "" && e.Action == "pass":
		// A passed test's output is not shown, as go test does without -v.
		s.output[e.Package] = slices.DeleteFunc(s.output[e.Package], func(c chunk) bool { return c.test == e.Test })
		fallthrough
	case e.Test != "" && e.Action == "fail":
		if !strings.Contains(e.Test, "/") {
			s.tests = append(s.tests, result{e.Package + " " + e.Test, seconds(e.Elapsed)})
		}
	case e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
		out := s.output[e.Package]
		delete(s.output, e.Package)
		if len(out) == 0 {
			return
		}
		if e.Action == "fail" {
			for _, c := range out {
				fmt.Fprint(s.w, c.text)
			}
			return
		}
		fmt.Fprint(s.w, out[len(out)-1].text) // the "ok" or "?" line
	}
}

// isFraming tells the lines -json's verbose mode adds around each test.
func isFraming(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// report prints where the time went.
func (s *summary) report() {
	for pkg, out := range s.output { // no end event: the binary died
		fmt.Fprintf(s.w, "%s (no result):\n", pkg)
		for _, c := range out {
			fmt.Fprint(s.w, c.text)
		}
	}
	slices.SortFunc(s.tests, func(a, b result) int { return cmp.Compare(b.elapsed, a.elapsed) })
	fmt.Fprintln(s.w, "\ntesttimes: the slowest tests")
	for _, r := range s.tests[:min(20, len(s.tests))] {
		fmt.Fprintf(s.w, "  %8s  %s\n", r.elapsed.Round(100*time.Millisecond), r.name)
	}
	if len(s.lab) > 0 {
		fmt.Fprintln(s.w, "testtimes: the lab tiers")
		for _, l := range s.lab {
			fmt.Fprintf(s.w, "  %s\n", l)
		}
	}
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func short(pkg string) string { return pkg[strings.LastIndex(pkg, "/")+1:] }
