package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

func TestPrintLinks(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	printLinks(&out, []admin.Link{
		{ID: "0123456789abcdef", Target: "vm1", Protocol: "ssh", Login: "deploy", Expires: now.Add(2 * time.Hour), Uses: 3, Left: 2,
			State: "active", CreatedBy: "root"},
		{ID: "fedcba9876543210", Target: "vm2\x1b[31m", Protocol: "rdp", Login: "x", Expires: now.Add(-time.Hour), Uses: 1, State: "expired"},
	}, now)
	got := out.String()
	for _, want := range []string{"0123456789abcdef  vm1", "in 2h0m0s", "2/3", "active", "1h0m0s ago", "0/1", "expired", "2 links"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "\x1b") {
		t.Errorf("a control character printed:\n%q", got)
	}
	out.Reset()
	printLinks(&out, nil, now)
	if out.String() != "no links\n" {
		t.Errorf("empty: %q", out.String())
	}
}
