package config

import "time"

// Links are shareable links: an admin issues one for a target, a protocol
// and a login (`bastionctl links create`), and whoever opens it gets that
// one session without a bastion account, still authenticating to the
// machine itself. Off unless enabled.
type Links struct {
	// Enabled turns the links on. Off: every link's URL answers the
	// expired page, and no link can be created.
	Enabled bool `yaml:"enabled"`
	// MaxValid is the longest validity an admin may give a link.
	// Default 24h.
	MaxValid time.Duration `yaml:"max_valid"`
	// MaxUses is the most uses an admin may give a link. Default 10.
	MaxUses int `yaml:"max_uses"`
	// Record records the sessions links open: nobody signed in vouches for
	// them. Default true.
	Record *bool `yaml:"record"`
}

// maxLinkUses bounds links.max_uses (proxy/link.MaxUses).
const maxLinkUses = 10000

// Recorded reports whether the sessions of links are recorded.
func (l Links) Recorded() bool { return l.Record == nil || *l.Record }

func (l *Links) setDefaults() {
	l.MaxValid = orDefault(l.MaxValid, 24*time.Hour)
	l.MaxUses = orDefault(l.MaxUses, 10)
}

func (c *Config) validateLinks(v *validator) {
	l := c.Links
	if l.MaxValid < time.Minute || l.MaxValid > 365*24*time.Hour {
		v.errorf("links.max_valid", "%s is out of range: from 1m to 365d", l.MaxValid)
	}
	if l.MaxUses < 1 || l.MaxUses > maxLinkUses {
		v.errorf("links.max_uses", "%d is out of range: 1 to %d", l.MaxUses, maxLinkUses)
	}
}
