// Package netpolicy turns the configuration into the nftables rules that
// make the bastion the only way in, applies them over netlink and keeps them
// in force. Its sub-packages read the host's interfaces (discover).
//
// netpolicy never imports proxy: the firewall and the front door meet only in
// the daemon package.
package netpolicy
