package broker

import "testing"

func TestErrorSentence(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"bastion at capacity", "Bastion at capacity."},
		{`there is no machine called "vm9" on this bastion`, `There is no machine called "vm9" on this bastion.`},
		{"vm1 has no address in the inventory.", "Vm1 has no address in the inventory."},
		{"élan: the connection was abandoned", "Élan: the connection was abandoned."},
		{"", "The session could not be opened."},
	} {
		if got := (&Error{Kind: KindUnreachable, Msg: c.msg}).Sentence(); got != c.want {
			t.Errorf("Sentence of %q = %q, want %q", c.msg, got, c.want)
		}
	}
}
