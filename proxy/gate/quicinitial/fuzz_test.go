package quicinitial

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func FuzzOpenInitial(f *testing.F) {
	f.Add(rfcClientInitial(f))
	rng := rand.New(rand.NewPCG(7, 8))
	hello := syntheticHello(rng, 600)
	f.Add(sealInitial(rfcDCID, []byte{1, 2}, []byte("token"), 3, cryptoFrame(0, hello), 1200))
	f.Add(sealInitialPN([]byte{1, 2, 3, 4}, nil, nil, 0, 1, append([]byte{frameAckECN, 5, 0, 1, 0, 1, 1, 0, 0, 0}, cryptoFrame(5, hello[5:50])...), 0))
	f.Add(sealInitial(rfcDCID, nil, nil, 0, []byte{frameConnClose, 0x0a, 0, 3, 'b', 'y', 'e'}, 0))
	// Payloads, for the second check below.
	f.Add(append([]byte{framePing, framePadding}, cryptoFrame(0, hello[:100])...))
	f.Add([]byte{frameAck, 0x40, 0x10, 0, 2, 1, 1, 2, 0x80, 0, 0, 3, 1, frameAckECN, 5, 0, 0, 2, 1, 2, 3})
	f.Add([]byte{frameConnClose, 0x0a, 0, 3, 'b', 'y', 'e'})
	f.Fuzz(func(t *testing.T, dgram []byte) {
		checkOpenInitial(t, dgram)
		// Random bytes hardly ever decrypt: fuzz the frames too.
		if len(dgram) < 16000 {
			checkOpenInitial(t, sealInitial(rfcDCID, nil, nil, 0, dgram, 0))
		}
	})
}

// checkOpenInitial checks that OpenInitial leaves dgram alone and returns
// frames of its own within reason.
func checkOpenInitial(t *testing.T, dgram []byte) {
	orig := bytes.Clone(dgram)
	_, frames, err := OpenInitial(dgram)
	if !bytes.Equal(dgram, orig) {
		t.Fatal("OpenInitial modified the datagram")
	}
	if err != nil {
		if frames != nil {
			t.Fatal("frames with an error")
		}
		return
	}
	var copies [][]byte
	total := 0
	for _, fr := range frames {
		total += len(fr.Data)
		if fr.Offset > maxStreamOffset-uint64(len(fr.Data)) {
			t.Fatalf("CRYPTO frame at %d, %d bytes", fr.Offset, len(fr.Data))
		}
		copies = append(copies, bytes.Clone(fr.Data))
	}
	if total > len(dgram) {
		t.Fatalf("%d bytes of CRYPTO data from a %d-byte datagram", total, len(dgram))
	}
	for i := range dgram {
		dgram[i] ^= 0xff
	}
	for i, fr := range frames {
		if !bytes.Equal(fr.Data, copies[i]) {
			t.Fatal("CRYPTO frame data aliases the datagram")
		}
	}
}

// fuzzFrames decodes CRYPTO frames from b: each is a 2-byte offset, a
// 1-byte length and that many bytes of data, as many as remain.
func fuzzFrames(b []byte) []CryptoFrame {
	var frames []CryptoFrame
	for len(b) >= 3 {
		off, n := binary.BigEndian.Uint16(b), int(b[2])
		b = b[3:]
		n = min(n, len(b))
		frames = append(frames, CryptoFrame{uint64(off), b[:n]})
		b = b[n:]
	}
	return frames
}

func encodeFuzzFrames(frames ...CryptoFrame) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint16(b, uint16(f.Offset))
		b = append(b, byte(len(f.Data)))
		b = append(b, f.Data...)
	}
	return b
}

func FuzzAssembler(f *testing.F) {
	msg := syntheticHello(rand.New(rand.NewPCG(9, 10)), 400)
	f.Add(encodeFuzzFrames(CryptoFrame{200, msg[200:400]}, CryptoFrame{0, msg[0:150]}, CryptoFrame{100, msg[100:250]}))
	f.Add(encodeFuzzFrames(CryptoFrame{0, []byte{1, 0, 0, 1}}, CryptoFrame{4, []byte{9}}, CryptoFrame{4, []byte{9}}))
	f.Add(encodeFuzzFrames(CryptoFrame{0, []byte{1, 0, 0, 1}}, CryptoFrame{4, []byte{9}}, CryptoFrame{4, []byte{8}}))
	f.Add(encodeFuzzFrames(CryptoFrame{MaxHello - 1, []byte{1, 2}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// A model of the stream: -1 where nothing arrived.
		var model [MaxHello]int16
		for i := range model {
			model[i] = -1
		}
		var a Assembler
		prefix := 0 // model bytes present from 0
		for _, fr := range fuzzFrames(b) {
			wantErr := fr.Offset+uint64(len(fr.Data)) > MaxHello
			for i, c := range fr.Data {
				if wantErr {
					break
				}
				j := int(fr.Offset) + i
				if model[j] >= 0 && model[j] != int16(c) {
					wantErr = true
				}
				model[j] = int16(c)
			}
			if err := a.Add([]CryptoFrame{fr}); (err != nil) != wantErr {
				t.Fatalf("Add(%d, %d bytes): err %v, want error %v", fr.Offset, len(fr.Data), err, wantErr)
			}
			if wantErr {
				return
			}

			got, ok, err := a.ClientHello()
			for prefix < MaxHello && model[prefix] >= 0 {
				prefix++
			}
			var n int
			switch {
			case prefix >= 1 && model[0] != 1:
				wantErr = true
			case prefix >= 4:
				n = 4 + (int(model[1])<<16 | int(model[2])<<8 | int(model[3]))
				wantErr = n > MaxHello
			}
			if (err != nil) != wantErr {
				t.Fatalf("ClientHello: err %v, want error %v", err, wantErr)
			}
			if wantErr {
				return
			}
			if wantOK := prefix >= 4 && prefix >= n; ok != wantOK {
				t.Fatalf("ClientHello: ok %v, want %v", ok, wantOK)
			}
			if !ok {
				continue
			}
			if len(got) != n {
				t.Fatalf("ClientHello of %d bytes, want %d", len(got), n)
			}
			for i, c := range got {
				if int16(c) != model[i] {
					t.Fatalf("ClientHello byte %d is %#x, want %#x", i, c, model[i])
				}
			}
		}
	})
}
