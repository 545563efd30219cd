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
	chromium fonts-dejavu-core            # the browser tests (web/, playwright-core drives it)
	rsyslog rsyslog-gnutls                # the collector audit shipping is tested against (TLS)
)
# node and npm build web/ and drive the browser. A node installed some other
# way (nodesource, nvm) will do if it is 18 or newer: Debian's npm package
# would conflict with nodesource's nodejs, so it is only asked for when
# node or npm is missing or too old.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ! command -v npm >/dev/null || [ "$node_major" -lt 18 ]; then
	packages+=(nodejs npm)
fi

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

# web/'s packages, from the lock file; nothing to do (and no network) when
# node_modules is newer than the lock.
web=$root/web
if [ -f "$web/package-lock.json" ] && command -v npm >/dev/null &&
	{ [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; }; then
	(cd "$web" && npm ci --no-audit --no-fund)
	touch "$web/node_modules/.package-lock.json"
fi
