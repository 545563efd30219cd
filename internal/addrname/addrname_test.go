package addrname

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		pattern string
		want    string // "" for no error, else a part of it
	}{
		{"{addr}", ""},
		{"{network}-{dashed}", ""},
		{"host {addr} ({network})", ""},
		{"{network}", "names no address"},
		{"fixed", "names no address"},
		{"{a}-{b}", "{a} is not a placeholder"},
		{"{addr", "without its '}'"},
		{"addr}", "without its '{'"},
		{"{addr}\n", "control character"},
		{strings.Repeat("{addr}", 30), "longer than 128"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			err := Check(tt.pattern)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check(%q) = %v, want nil", tt.pattern, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Check(%q) = %v, want an error with %q", tt.pattern, err, tt.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	tests := []struct {
		pattern, addr, want string
	}{
		{"", "10.20.1.5", "10.20.1.5"},
		{"{addr}", "2001:db8:20::5", "2001:db8:20::5"},
		{"{network}-{dashed}", "10.20.1.5", "lab-10-20-1-5"},
		{"{network}-{dashed}", "2001:db8:20::5", "lab-2001-db8-20--5"},
		{"{addr}", "::ffff:10.20.1.5", "10.20.1.5"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"/"+tt.addr, func(t *testing.T) {
			if got := Expand(tt.pattern, "lab", netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Fatalf("Expand(%q, lab, %s) = %q, want %q", tt.pattern, tt.addr, got, tt.want)
			}
		})
	}
}
