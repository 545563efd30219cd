package webssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestMachineRequestsAnswered: the relay answers what the machine asks of
// the connection itself (machineConn, no *ssh.Client): a machine (an
// x/crypto/ssh server here, the only way to script these) that sends a
// global request wanting an answer, and then tries to open a channel
// toward the bastion, gets "no" to the first and a refusal of the second,
// and the terminal goes on; over IPv4 and IPv6.
func TestMachineRequestsAnswered(t *testing.T) {
	for _, tc := range []struct {
		name, listen string
	}{{"ipv4", "127.0.0.1:0"}, {"ipv6", "[::1]:0"}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tc.listen)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.name, err)
			}
			defer ln.Close()
			result := make(chan string, 1)
			go scriptedMachine(ln, result)
			h := newHarness(t, nil, ln.Addr().String(), func(p *Params) {
				p.HostKeys = func(string) (ssh.HostKeyCallback, []string) { return ssh.InsecureIgnoreHostKey(), nil }
			})
			c := h.dial()
			c.expect(typeHello)
			c.auth(map[string]any{"password": "x"})
			c.expect(typeReady)
			c.waitFor("ANSWERED")
			if got := <-result; got != "global request: no; channel: refused" {
				t.Errorf("the machine saw %q", got)
			}
			c.typeText("still here")
			c.waitFor("still here") // echoed: the terminal went on
			c.expectEnd(endExit)
			h.waitServed()
		})
	}
}

// scriptedMachine serves one SSH connection on ln: a shell that, once
// open, sends a global request and opens a channel toward the client,
// says what it got on result and ANSWERED to the terminal, then echoes
// one read and exits.
func scriptedMachine(ln net.Listener, result chan<- string) {
	nc, err := ln.Accept()
	if err != nil {
		result <- err.Error()
		return
	}
	defer nc.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(key)
	cfg := &ssh.ServerConfig{PasswordCallback: func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(signer)
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		result <- err.Error()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for newCh := range chans {
		if newCh.ChannelType() != "session" {
			newCh.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, chReqs, err := newCh.Accept()
		if err != nil {
			result <- err.Error()
			return
		}
		shell := make(chan struct{})
		go func() {
			for req := range chReqs {
				req.Reply(req.Type != "exit", nil)
				if req.Type == "shell" {
					close(shell)
				}
			}
		}()
		<-shell
		ok, _, err := sc.SendRequest("probe@test", true, nil)
		got := fmt.Sprintf("global request: %v", map[bool]string{true: "yes", false: "no"}[ok])
		if err != nil {
			got = "global request: " + err.Error()
		}
		_, _, err = sc.OpenChannel("x11", nil)
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			got += "; channel: refused"
		} else {
			got += fmt.Sprintf("; channel: %v", err)
		}
		result <- got
		ch.Write([]byte("ANSWERED\r\n"))
		buf := make([]byte, 256)
		n, _ := ch.Read(buf)
		ch.Write(buf[:n])
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		ch.Close()
		return
	}
}
