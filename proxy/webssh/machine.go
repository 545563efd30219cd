package webssh

import (
	"errors"
	"fmt"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// machineConn is the SSH connection to the machine, without the three
// goroutines an *ssh.Client adds to each (one waiting for the connection's
// end, one answering the machine's global requests, one refusing the
// channels it opens): the relay's loop does the last two itself (serve),
// so an open terminal holds three goroutines, and their stacks, fewer.
// Until the loop runs (the login, the opening of the shell), the
// connection queues what the machine sends (up to 16 of each, which a
// machine that does not wait for answers never nears: OpenSSH sends one
// global request after the login).
type machineConn struct {
	ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// refuseRequest and refuseChannel answer what the machine asks of the
// bastion as an *ssh.Client would: no to every global request (keepalives
// included, as OpenSSH answers them), and no channel may be opened toward
// the bastion.
func refuseRequest(req *ssh.Request) {
	if req.WantReply {
		req.Reply(false, nil)
	}
}

func refuseChannel(nc ssh.NewChannel) {
	nc.Reject(ssh.UnknownChannelType, "unknown channel type")
}

// sftpClient opens the SFTP subsystem on a session channel of m.
func (m *machineConn) sftpClient(opts ...sftp.ClientOption) (*sftp.Client, error) {
	ch, reqs, err := m.OpenChannel("session", nil)
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs) // ends when the channel does
	ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{"sftp"}))
	if err == nil && !ok {
		err = errors.New("the machine refused the subsystem")
	}
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("request the sftp subsystem: %w", err)
	}
	cl, err := sftp.NewClientPipe(ch, ch, opts...)
	if err != nil {
		ch.Close()
		return nil, err
	}
	return cl, nil
}
