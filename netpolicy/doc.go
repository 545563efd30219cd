// Package netpolicy turns an Input (the bastion's place in the network, the
// machines behind it, the firewall settings) into the nftables rules that
// make the bastion the only way in, applies them over netlink and keeps them
// in force. Its sub-packages read the host's interfaces (discover).
//
// netpolicy imports neither the daemon nor proxy: the daemon translates its
// configuration into an Input, and the firewall and the front door meet only
// in the daemon package. TestNoUpwardImports holds that rule.
package netpolicy
