package config

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestParseLinks: off with defaults when absent; read when given; out of
// range refused with its line.
func TestParseLinks(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	cfg, err := Parse("x.yaml", []byte(lab))
	if err != nil || cfg.Links.Enabled || cfg.Links.MaxValid != 24*time.Hour || cfg.Links.MaxUses != 10 || !cfg.Links.Recorded() {
		t.Fatalf("without the section: %+v (%v)", cfg.Links, err)
	}
	cfg, err = Parse("x.yaml", []byte(lab+"links:\n  enabled: true\n  max_valid: 7d\n  max_uses: 100\n  record: false\n"))
	if err != nil || !cfg.Links.Enabled || cfg.Links.MaxValid != 7*24*time.Hour || cfg.Links.MaxUses != 100 || cfg.Links.Recorded() {
		t.Fatalf("given: %+v (%v)", cfg.Links, err)
	}
	n := strings.Count(lab, "\n")
	for in, want := range map[string]string{
		"links: {max_valid: 30s}":   "x.yaml:" + strconv.Itoa(n+1) + ": links.max_valid: 30s is out of range: from 1m to 365d",
		"links: {max_uses: -1}":     "links.max_uses: -1 is out of range: 1 to 10000",
		"links: {max_uses: 10001}":  "links.max_uses: 10001 is out of range",
		"links: {enabled: yes-ish}": "links.enabled",
		"links: {max_valid: 2y}":    "links.max_valid",
		"links: {uses: 3}":          `links.uses: unknown key`,
	} {
		_, err := Parse("x.yaml", []byte(lab+in+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}
