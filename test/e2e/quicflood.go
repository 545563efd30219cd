package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
)

// AddClientAddrs adds addrs to the client namespace's eth0 (IPv6 ones
// without duplicate address detection, usable at once) and removes them
// when the test ends. IPv4 addresses join the lab's /24, IPv6 ones its /64.
func AddClientAddrs(t testing.TB, addrs []netip.Addr) {
	t.Helper()
	var add, del strings.Builder
	for _, a := range addrs {
		if a.Is4() {
			fmt.Fprintf(&add, "addr add %s/24 dev eth0\n", a)
			fmt.Fprintf(&del, "addr del %s/24 dev eth0\n", a)
		} else {
			fmt.Fprintf(&add, "addr add %s/64 dev eth0 nodad\n", a)
			fmt.Fprintf(&del, "addr del %s/64 dev eth0\n", a)
		}
	}
	batch := func(cmds string) error {
		cmd := exec.Command("ip", "-n", LabValue(t, "NS_CLIENT"), "-batch", "-")
		cmd.Stdin = strings.NewReader(cmds)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ip -batch: %v: %s", err, out)
		}
		return nil
	}
	if err := batch(add.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { batch(del.String()) })
}

// DialQUICFrom makes a QUIC connection with the tunnel's ALPN and the
// bastion's name from src (an address of the client namespace) to
// bastion:443, and nothing else: no stream. The connection and its socket
// are closed when the test ends.
func DialQUICFrom(t testing.TB, src netip.Addr, bastion string) (*quic.Conn, error) {
	t.Helper()
	var pc net.PacketConn
	if err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(src.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() {
		tr.Close()
		pc.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(bastion), 443)),
		&tls.Config{ServerName: ServerName, NextProtos: []string{tunnelwire.ALPN}, InsecureSkipVerify: true},
		&quic.Config{Versions: []quic.Version{quic.Version1}, HandshakeIdleTimeout: 5 * time.Second, KeepAlivePeriod: 5 * time.Second})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// Refused says whether err is a QUIC connection the server refused
// (CONNECTION_REFUSED).
func Refused(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused
}

// StalledStreams opens n streams on conn, each sending the first three
// bytes of a tunnel request and never the rest.
func StalledStreams(t testing.TB, conn *quic.Conn, n int) []*quic.Stream {
	t.Helper()
	var strs []*quic.Stream
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		str, err := conn.OpenStreamSync(ctx)
		cancel()
		if err != nil {
			t.Fatalf("open a stream: %v", err)
		}
		if _, err := str.Write([]byte("BTU")); err != nil {
			t.Fatalf("write on a stream: %v", err)
		}
		strs = append(strs, str)
	}
	return strs
}

// StreamEnds waits, at most limit, for each of strs to end, all at once,
// and says how each ended: "busy" (reset by the bastion with
// tunnel.ErrCodeBusy), "closed" (any other end) or "open" (not ended).
func StreamEnds(strs []*quic.Stream, limit time.Duration) []string {
	ends := make([]string, len(strs))
	var wg sync.WaitGroup
	deadline := time.Now().Add(limit)
	for i, str := range strs {
		wg.Go(func() {
			str.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, str)
			var se *quic.StreamError
			var ne net.Error
			switch {
			case errors.As(err, &se) && se.Remote && se.ErrorCode == tunnel.ErrCodeBusy:
				ends[i] = "busy"
			case errors.As(err, &ne) && ne.Timeout():
				ends[i] = "open"
			default:
				ends[i] = "closed"
			}
		})
	}
	wg.Wait()
	return ends
}

// Metric is the value of the daemon's metric line that starts with name
// (with its labels, if any, e.g. `x_total{reason="a"}`), or -1 if there is
// none.
func Metric(t testing.TB, name string) float64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", LabValue(t, "NS_BASTION"), "curl", "-sf", "http://127.0.0.1:9443/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	return -1
}

// RSS is the resident memory of the daemon's process (VmRSS), in bytes.
func (d *Daemon) RSS() int64 {
	d.t.Helper()
	return rssOf(d.t, d.Cmd.Process.Pid)
}

// rssOf is the resident memory of process pid (VmRSS), in bytes.
func rssOf(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS: %v", err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
