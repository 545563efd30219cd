#!/usr/bin/env bash
# Installs the system packages bastiond's tests, benchmarks and demo need.
# Idempotent: when everything is present it runs no apt-get at all, so a
# second run is fast and needs no network. Run as root.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

packages=(
	iproute2 nftables procps util-linux   # namespaces, veth, bridges; nft for audits; setpriv
	openssh-server openssh-client sshpass # vm1's sshd; ssh clients for tests and benchmarks
	freerdp2-shadow-x11 freerdp2-x11      # vm2's RDP server; xfreerdp for tunnel tests
	winpr-utils                           # winpr-hash, for vm2's NLA SAM file
	xvfb x11-apps x11-xserver-utils       # vm2's display and a known window on it
	socat curl ca-certificates openssl    # the demo's forward; probes
	nmap                                  # scan-resistance tests
	iperf3                                # raw TCP benchmarks through the tunnel
	systemd                               # systemd-socket-activate, systemd-analyze
)
# Later issues add the browser tier here: chromium, nodejs, npm.

if [ "$(id -u)" != 0 ]; then
	echo "test/deps.sh: not root; not installing system packages" >&2
	exit 0
fi

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "test/deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# policy-rc.d keeps package scripts from starting services (sshd) on this host.
	policy=/usr/sbin/policy-rc.d
	created_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		created_policy=1
	fi
	trap '[ -n "$created_policy" ] && rm -f "$policy"' EXIT
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

if [ -f "$root/go.mod" ] && command -v go >/dev/null; then
	(cd "$root" && go mod download)
fi
