package servername

import "testing"

func TestSame(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		same      bool
	}{
		{"bastion.example", "bastion.example", true},
		{"Bastion.Example.", "bastion.example", true},
		{"bastion.example", "bastion.example.", true},
		{"", "bastion.example", false},
		{"other.example", "bastion.example", false},
		{"bastion.example..", "bastion.example", false},
	} {
		if got := Same(tc.got, tc.want); got != tc.same {
			t.Errorf("Same(%q, %q) = %v", tc.got, tc.want, got)
		}
	}
}
