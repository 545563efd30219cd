package quicinitial

import (
	"bytes"
	"testing"
)

func TestAssemblerOutOfOrder(t *testing.T) {
	msg := []byte{1, 0, 0, 6, 'a', 'b', 'c', 'd', 'e', 'f'}
	var a Assembler
	steps := []CryptoFrame{
		{6, msg[6:9]},
		{0, msg[0:2]},
		{6, msg[6:9]}, // duplicate
		{1, msg[1:5]}, // overlap
		{9, msg[9:]},
		{4, msg[4:7]}, // the last gap, and overlaps both sides
	}
	for i, f := range steps {
		if err := a.Add([]CryptoFrame{f}); err != nil {
			t.Fatal(err)
		}
		got, ok, err := a.ClientHello()
		if err != nil || ok != (i == len(steps)-1) {
			t.Fatalf("after frame %d: ok %v, err %v", i, ok, err)
		}
		if ok && !bytes.Equal(got, msg) {
			t.Fatalf("ClientHello %q, want %q", got, msg)
		}
	}
	// Data after the ClientHello is not part of it.
	if err := a.Add([]CryptoFrame{{uint64(len(msg)), []byte("more")}}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := a.ClientHello(); !ok || err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("ClientHello %q, %v, %v", got, ok, err)
	}
}

func TestAssemblerErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		frames []CryptoFrame
		addErr bool
	}{
		{"offset 20000", []CryptoFrame{{20000, []byte{1}}}, true},
		{"past MaxHello", []CryptoFrame{{MaxHello - 1, []byte{1, 2}}}, true},
		{"huge offset", []CryptoFrame{{1<<64 - 1, []byte{1}}}, true},
		{"conflicting data", []CryptoFrame{{0, []byte{1, 0, 0, 9}}, {2, []byte{1}}}, true},
		{"not a ClientHello", []CryptoFrame{{0, []byte{2}}}, false},
		{"ClientHello over MaxHello", []CryptoFrame{{0, []byte{1, 0, 0x40, 0}}}, false},
	} {
		var a Assembler
		err := a.Add(c.frames)
		if (err != nil) != c.addErr {
			t.Errorf("%s: Add: %v", c.name, err)
		}
		if _, ok, err := a.ClientHello(); ok || err == nil {
			t.Errorf("%s: ClientHello: ok %v, err %v", c.name, ok, err)
		}
		if err := a.Add([]CryptoFrame{{0, []byte{1}}}); err == nil {
			t.Errorf("%s: Add after an error succeeded", c.name)
		}
	}

	// The largest ClientHello fits exactly.
	var a Assembler
	msg := make([]byte, MaxHello)
	msg[0], msg[1], msg[2], msg[3] = 1, 0, 0x3f, 0xfc
	if err := a.Add([]CryptoFrame{{MaxHello, nil}, {MaxHello / 2, msg[MaxHello/2:]}, {0, msg[:MaxHello/2]}}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := a.ClientHello(); !ok || err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("ClientHello of MaxHello bytes: ok %v, err %v", ok, err)
	}
}
