package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
)

// listeners are the public sockets the front door serves on.
type listeners struct {
	tcp  []net.Listener
	udp  []net.PacketConn
	info []adminapi.Listener
}

func (l *listeners) Close() {
	for _, ln := range l.tcp {
		ln.Close()
	}
	for _, pc := range l.udp {
		pc.Close()
	}
}

// acquireListeners takes TCP and UDP sockets from systemd socket activation
// and binds, for each family of socket systemd did not pass, the configured
// addresses itself. Inherited sockets are told apart by their type, not by
// position or name, so that the unit's order of ListenStream and
// ListenDatagram does not matter.
func acquireListeners(cfg *config.Config) (*listeners, error) {
	l := &listeners{}
	for _, f := range activation.Files(true) {
		err := l.adopt(f)
		f.Close() // net.File* duplicated the descriptor
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	if len(l.tcp) == 0 {
		for _, a := range cfg.Listen.Addresses {
			ln, err := net.Listen("tcp", a.String())
			if err != nil {
				l.Close()
				return nil, fmt.Errorf("daemon: listen tcp %s: %w", a, err)
			}
			l.tcp = append(l.tcp, ln)
			l.info = append(l.info, adminapi.Listener{Network: "tcp", Address: ln.Addr().String()})
		}
	}
	if len(l.udp) == 0 {
		for _, a := range cfg.Listen.Addresses {
			pc, err := net.ListenPacket("udp", a.String())
			if err != nil {
				l.Close()
				return nil, fmt.Errorf("daemon: listen udp %s: %w", a, err)
			}
			l.udp = append(l.udp, pc)
			l.info = append(l.info, adminapi.Listener{Network: "udp", Address: pc.LocalAddr().String()})
		}
	}
	return l, nil
}

func (l *listeners) adopt(f *os.File) error {
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("daemon: inherited fd %d (%s) is not a socket: %w", f.Fd(), f.Name(), err)
	}
	switch typ {
	case unix.SOCK_STREAM:
		ln, err := net.FileListener(f)
		if err != nil {
			return fmt.Errorf("daemon: inherited stream socket %s: %w", f.Name(), err)
		}
		if _, ok := ln.(*net.TCPListener); !ok {
			ln.Close()
			return fmt.Errorf("daemon: inherited stream socket %s is not TCP", f.Name())
		}
		l.tcp = append(l.tcp, ln)
		l.info = append(l.info, adminapi.Listener{Network: "tcp", Address: ln.Addr().String(), Activated: true})
	case unix.SOCK_DGRAM:
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return fmt.Errorf("daemon: inherited datagram socket %s: %w", f.Name(), err)
		}
		if _, ok := pc.(*net.UDPConn); !ok {
			pc.Close()
			return fmt.Errorf("daemon: inherited datagram socket %s is not UDP", f.Name())
		}
		l.udp = append(l.udp, pc)
		l.info = append(l.info, adminapi.Listener{Network: "udp", Address: pc.LocalAddr().String(), Activated: true})
	default:
		return errors.New("daemon: inherited socket " + f.Name() + " is neither stream nor datagram")
	}
	return nil
}
