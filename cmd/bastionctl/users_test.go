package main

import (
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

// TestPrintUsersSSO: an account a single sign-on provider made shows its
// provider and last sign-in where a local one shows when its password was
// set.
func TestPrintUsersSSO(t *testing.T) {
	var out strings.Builder
	day := time.Date(2026, 12, 7, 10, 0, 0, 0, time.Local)
	printUsers(&out, []admin.UserInfo{
		{Name: "alice", TOTP: true, Roles: []string{"ops"}, PasswordChanged: day},
		{Name: "ana@lab.example", Roles: []string{"sso-ops"}, Provider: "lab", Groups: []string{"lab-ops"}, LastSignIn: day},
	})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[1], "2026-12-07") || !strings.Contains(lines[1], "yes") ||
		!strings.HasSuffix(lines[2], "sso:lab, signed in 2026-12-07") {
		t.Fatalf("users list:\n%s", out.String())
	}
}
