package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RouteSources lets the client namespace send from every address of the
// prefixes given, as if many users were behind them: a local route for each
// on the client's loopback (so that a socket can bind any address in it),
// and a route back through the client on the bastion. The prefixes must be
// outside the lab's own networks (documentation ranges such as
// 198.51.100.0/24 and 2001:db8:f100::/48). Removed when t ends.
func RouteSources(t testing.TB, prefixes ...netip.Prefix) {
	t.Helper()
	client, bastion := LabValue(t, "NS_CLIENT"), LabValue(t, "NS_BASTION")
	for _, p := range prefixes {
		fam, via := "-4", LabValue(t, "CLIENT4")
		if p.Addr().Is6() {
			fam, via = "-6", LabValue(t, "CLIENT6")
		}
		steps := []struct{ ns, verb string }{{client, "local " + p.String() + " dev lo"}, {bastion, p.String() + " via " + via}}
		for _, s := range steps {
			args := append([]string{"-n", s.ns, fam, "route", "add"}, strings.Fields(s.verb)...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Cleanup(func() {
				args[4] = "del"
				exec.Command("ip", args...).Run()
			})
		}
	}
}

// NewWebUserFrom is NewWebUser whose connections come from the address
// from (of the client namespace, or of a prefix given to RouteSources).
func NewWebUserFrom(t testing.TB, addr string, from netip.Addr) *WebUser {
	u := NewWebUser(t, addr)
	tr := u.c.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), Control: freeBind}
			c, err = d.DialContext(ctx, network, net.JoinHostPort(addr, "443"))
			return err
		})
		return c, err
	}
	return u
}

// freeBind lets a socket bind an address of a local route that no
// interface holds: IPv4 allows it by itself, IPv6 needs IPV6_FREEBIND.
func freeBind(network, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		if strings.HasSuffix(network, "6") {
			err = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		}
	})
	return errors.Join(cerr, err)
}

// TOTPAt is the RFC 6238 code for the base32 secret, steps after the
// current one.
func TOTPAt(t testing.TB, secret string, steps int64) string {
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(time.Now().Unix()/30+steps))
	m := hmac.New(sha1.New, key)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[19] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(sum[off:])&0x7fffffff)%1_000_000)
}

// EnrolTOTP runs `bastionctl users totp user` as an admin would with the
// user present, and returns the secret the enrolment showed and what it
// printed. The enrolment uses the current step's code.
func EnrolTOTP(t testing.TB, d *Daemon, user string) (secret, shown string) {
	t.Helper()
	cmd := exec.Command(BinPath("bastionctl"), "--socket", d.admin, "users", "totp", user)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), "Code shown by the app: ") {
		n, err := stdout.Read(buf)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("enrolment output: %v\n%s", err, out.String())
		}
		out.Write(buf[:n])
	}
	m := regexp.MustCompile(`by hand: ([A-Z2-7]+)`).FindStringSubmatch(out.String())
	if m == nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no secret in the enrolment:\n%s", out.String())
	}
	fmt.Fprintln(stdin, TOTPAt(t, m[1], 0))
	rest, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil || !strings.Contains(string(rest), "TOTP enrolled") {
		t.Fatalf("confirm: %v\n%s", err, rest)
	}
	return m[1], out.String()
}
