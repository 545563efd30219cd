package netpolicy

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BenchmarkCounterLayouts measures what the kernel spends dumping 10,000
// counters in each of the forms a per-target counter could take, each in a
// table of its own in a fresh namespace: set elements keyed by address with
// a counter and a comment (today's counting sets), the same without the
// comment, address . protocol . port elements with both (the VNet guard's
// sets), and named counter objects (NFT_MSG_GETOBJ). It reports the time and
// the CPU time (mostly the kernel's, building the dump) per counter of one
// dump, read into one buffer and not decoded.
func BenchmarkCounterLayouts(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: loads tables into a fresh network namespace")
	}
	const n = 10_000
	name := fmt.Sprintf("bastiond-layouts-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	var sb strings.Builder
	sb.WriteString("table inet layouts {\n")
	elems := func(set, typ string, elem func(i int) string) {
		fmt.Fprintf(&sb, "set %s { type %s; counter; elements = {", set, typ)
		for i := range n {
			if i > 0 {
				sb.WriteString(",")
			}
			sb.WriteString(elem(i))
		}
		sb.WriteString("} }\n")
	}
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	elems("commented", "ipv4_addr", func(i int) string { return fmt.Sprintf("%s comment \"target-%05d\"", addr(i), i) })
	elems("plain", "ipv4_addr", func(i int) string { return addr(i) })
	elems("concat", "ipv4_addr . inet_proto . inet_service", func(i int) string {
		return fmt.Sprintf("%s . tcp . 22 comment \"target-%05d\"", addr(i), i)
	})
	for i := range n {
		fmt.Fprintf(&sb, "counter target-%05d { }\n", i)
	}
	sb.WriteString("}\n")
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(sb.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft: %v: %s", err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	g, err := dialGen(int(h))
	if err != nil {
		b.Fatal(err)
	}
	defer g.c.Close()
	setReq := func(set string) (netlink.HeaderType, []byte) {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, "layouts")
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
		attrs, _ := ae.Encode()
		return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM), attrs
	}
	objReq := func() (netlink.HeaderType, []byte) {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		ae.String(unix.NFTA_OBJ_TABLE, "layouts")
		ae.Uint32(unix.NFTA_OBJ_TYPE, unix.NFT_OBJECT_COUNTER)
		attrs, _ := ae.Encode()
		return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETOBJ), attrs
	}
	buf := make([]byte, dumpBuffer)
	for _, c := range []struct {
		name string
		req  func() (netlink.HeaderType, []byte)
	}{
		{"set-elements-address-comment", func() (netlink.HeaderType, []byte) { return setReq("commented") }},
		{"set-elements-address", func() (netlink.HeaderType, []byte) { return setReq("plain") }},
		{"set-elements-address-proto-port-comment", func() (netlink.HeaderType, []byte) { return setReq("concat") }},
		{"counter-objects", objReq},
	} {
		b.Run(c.name, func(b *testing.B) {
			typ, attrs := c.req()
			var bytes int
			cpu0 := cpuTime()
			for b.Loop() {
				var err error
				if bytes, err = rawDump(g, buf, typ, attrs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/counter")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/n, "cpu-ns/counter")
			b.ReportMetric(float64(bytes)/n, "B/counter")
		})
	}
}

// rawDump sends one dump request and reads its answers until NLMSG_DONE,
// returning how many bytes they took.
func rawDump(g genConn, buf []byte, typ netlink.HeaderType, attrs []byte) (int, error) {
	req, err := g.c.Send(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return 0, err
	}
	raw, err := g.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, _, _, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		}); err != nil {
			return total, err
		}
		if rerr != nil {
			return total, rerr
		}
		total += n
		done, err := readDatagram(buf[:n], req.Header.Sequence, func([]byte, uint64, uint64) {})
		if err != nil || done {
			return total, err
		}
	}
}
