package netpolicy

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// genConn asks the kernel for the nftables ruleset generation: a number that
// every committed nftables transaction in the namespace increments, whoever
// commits it. Packets that add to a dynamic set (the blocklist, the meters)
// do not. While the generation stays what it was when the kernel last
// matched the policy, nothing can differ, and the reconciler's periodic
// check costs one round trip instead of a read of every set element.
type genConn struct{ c *netlink.Conn }

func dialGen(netnsFd int) (genConn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFd})
	if err != nil {
		return genConn{}, fmt.Errorf("netpolicy: netlink: %w", err)
	}
	return genConn{c}, nil
}

func (g genConn) generation() (uint32, error) {
	msgs, err := g.c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // struct nfgenmsg
	})
	if err != nil {
		return 0, fmt.Errorf("netpolicy: ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("netpolicy: ruleset generation: %w", err)
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				if b := ad.Bytes(); len(b) == 4 {
					return binary.BigEndian.Uint32(b), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("netpolicy: ruleset generation: no NFTA_GEN_ID in the answer")
}

func (g genConn) Close() error { return g.c.Close() }
