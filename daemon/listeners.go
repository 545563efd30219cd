package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy/handover"
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
//
// After a binary upgrade (pred set) the sockets are the previous process's,
// in its order, and info says how it got them.
func acquireListeners(cfg *config.Config, pred *handover.Predecessor, info []adminapi.Listener) (*listeners, error) {
	if pred != nil {
		return inheritListeners(pred, info)
	}
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

// inheritListeners takes the previous process's sockets, handed over as
// tcp/0, tcp/1..., udp/0... (see handoverFiles).
func inheritListeners(pred *handover.Predecessor, info []adminapi.Listener) (*listeners, error) {
	l := &listeners{}
	for _, network := range []string{"tcp", "udp"} {
		for i := 0; ; i++ {
			f := pred.File(fmt.Sprintf("%s/%d", network, i))
			if f == nil {
				break
			}
			err := l.adopt(f)
			f.Close()
			if err != nil {
				l.Close()
				return nil, err
			}
		}
	}
	if len(l.tcp) == 0 || len(l.udp) == 0 {
		l.Close()
		return nil, errors.New("daemon: the previous process handed over no TCP or no UDP socket")
	}
	for i, mine := range l.info {
		l.info[i].Activated = slices.ContainsFunc(info, func(prev adminapi.Listener) bool {
			return prev.Activated && prev.Network == mine.Network && prev.Address == mine.Address
		})
	}
	return l, nil
}

// handoverFiles are new descriptors of the sockets, for the next process.
func (l *listeners) handoverFiles() ([]handover.File, error) {
	var files []handover.File
	add := func(c syscall.Conn, name string) error {
		f, err := handover.Dup(c, name)
		if err == nil {
			files = append(files, handover.File{Name: name, File: f})
		}
		return err
	}
	var err error
	for i, ln := range l.tcp {
		if err == nil {
			err = add(ln.(*net.TCPListener), fmt.Sprintf("tcp/%d", i))
		}
	}
	for i, pc := range l.udp {
		if err == nil {
			err = add(pc.(*net.UDPConn), fmt.Sprintf("udp/%d", i))
		}
	}
	if err != nil {
		closeFiles(files)
		return nil, err
	}
	return files, nil
}

func closeFiles(files []handover.File) {
	for _, f := range files {
		f.File.Close()
	}
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
