package e2e

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Probe says what a TCP connection attempt from namespace ns to addr:port
// meets: "open", "refused" (an RST: the port is visibly closed) or
// "filtered" (silence: dropped).
func Probe(t testing.TB, ns, addr string, port int, from string) string {
	t.Helper()
	var result string
	err := InNetns(ns, func() error {
		d := net.Dialer{Timeout: 800 * time.Millisecond}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		switch {
		case err == nil:
			c.Close()
			result = "open"
		case errors.Is(err, syscall.ECONNREFUSED):
			result = "refused"
		case isTimeout(err):
			result = "filtered"
		default:
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("probe %s:%d from %s: %v", addr, port, ns, err)
	}
	return result
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ClientUDP is a UDP socket in the client's namespace, closed when the test
// ends.
func ClientUDP(t testing.TB) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// ExpectProbe fails t unless a probe from ns meets want at addr:port.
func ExpectProbe(t testing.TB, ns, addr string, port int, want string) {
	t.Helper()
	if got := Probe(t, ns, addr, port, ""); got != want {
		t.Errorf("from %s, %s port %d is %s, want %s", ns, addr, port, got, want)
	}
}

// InBastion runs a command in the bastion's namespace.
func InBastion(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", LabValue(t, "NS_BASTION")}, args...)...).CombinedOutput()
	return string(out), err
}

// scanPorts are the ports an nmap scan covers: 1-1024 and every port the
// lab's services and the daemon use.
const scanPorts = "1-1024,3389,3390,8443,9443"

// NmapScan SYN-scans addr from namespace ns and returns the open ports and
// how many ports nmap found filtered.
func NmapScan(t testing.TB, ns, addr string, extra ...string) (open []string, filtered int) {
	t.Helper()
	if _, err := exec.LookPath("nmap"); err != nil {
		t.Skip("nmap not installed (test/deps.sh installs it)")
	}
	args := []string{"netns", "exec", ns, "nmap", "-Pn", "-sS", "-n", "-p", scanPorts, "--max-retries", "1", "-T4",
		"--host-timeout", "120s", "-oG", "-"}
	if strings.Contains(addr, ":") {
		args = append(args, "-6")
	}
	args = append(append(args, extra...), addr)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		_, ports, ok := strings.Cut(line, "Ports: ")
		if !ok {
			continue
		}
		ports, ignored, _ := strings.Cut(ports, "\tIgnored State: ")
		for _, p := range strings.Split(ports, ", ") {
			f := strings.Split(p, "/")
			switch {
			case len(f) > 1 && f[1] == "open":
				open = append(open, f[0])
			case len(f) > 1 && f[1] == "filtered":
				filtered++
			}
		}
		if n, ok := strings.CutPrefix(ignored, "filtered ("); ok {
			var k int
			fmt.Sscanf(n, "%d", &k)
			filtered += k
		}
	}
	t.Logf("nmap %s from %s: open %v, filtered %d", addr, ns, open, filtered)
	return open, filtered
}
