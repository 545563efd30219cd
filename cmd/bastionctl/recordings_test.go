package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

func TestPrintRecordings(t *testing.T) {
	start := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	printRecordings(&out, []admin.RecordingInfo{
		{RecordingFile: admin.RecordingFile{ID: "aaaaaaaaaaa1", Protocol: "ssh", Size: 12 << 10}, User: "alice", Target: "vm1", Login: "lab",
			Start: start, Duration: 75 * time.Second},
		{RecordingFile: admin.RecordingFile{ID: "aaaaaaaaaaa2", Protocol: "rdp", Size: 3 << 20}, Duration: 2 * time.Minute},
	})
	for _, want := range []string{
		"ID            USER   TARGET   PROTOCOL  START                 DURATION  SIZE",
		"aaaaaaaaaaa1  alice  lab@vm1  ssh       2026-12-06 09:00:00Z  1m15s     12.0 KiB",
		"aaaaaaaaaaa2  -      -        rdp       -                     2m0s      3.0 MiB",
		"2 recordings, 3.0 MiB",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// A cluster's: which instance made each one.
	out.Reset()
	printRecordings(&out, []admin.RecordingInfo{
		{RecordingFile: admin.RecordingFile{ID: "aaaaaaaaaaa1", Protocol: "ssh", Size: 12 << 10}, Instance: "bastion-a", User: "alice",
			Target: "vm1", Login: "lab", Start: start, Duration: 75 * time.Second},
		{RecordingFile: admin.RecordingFile{ID: "aaaaaaaaaaa2", Protocol: "rdp", Size: 3 << 20}, Duration: 2 * time.Minute},
	})
	for _, want := range []string{
		"ID            INSTANCE   USER   TARGET   PROTOCOL  START                 DURATION  SIZE",
		"aaaaaaaaaaa1  bastion-a  alice  lab@vm1  ssh       2026-12-06 09:00:00Z  1m15s     12.0 KiB",
		"aaaaaaaaaaa2  -          -      -        rdp       -                     2m0s      3.0 MiB",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("cluster output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	printChecks(&out, []admin.RecordingCheck{{ID: "aaaaaaaaaaa1", Outcome: admin.CheckMismatch, Got: "ab", Want: "cd"}})
	if !strings.Contains(out.String(), "aaaaaaaaaaa1  mismatch  file sha256:ab, end record sha256:cd") {
		t.Errorf("checks:\n%s", out.String())
	}
}
