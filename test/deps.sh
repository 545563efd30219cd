#!/usr/bin/env bash
# Installs the system packages bastiond's demo or its tests need.
#
#   test/deps.sh demo   what `make demo` needs: the lab's servers, the forward, node to build web/
#   test/deps.sh demo-cluster   what `make demo CLUSTER=1` needs besides: HAProxy, PostgreSQL
#   test/deps.sh test   the above and what the tests and benchmarks add (browser, nmap, iperf3, ...)
#
# All three also build Dex, the lab's OpenID provider, from its Go module,
# pinned, into a cache outside the clone (DEX_CACHE, default
# /var/cache/bastiond-test; lab.sh runs it from there): once per version,
# about 90 s, and nothing at all when it is there.
#
# Idempotent: when everything is present it runs no apt-get at all, so a
# second run is fast and needs no network. Run as root. It prints one line
# per step; apt's and npm's own output goes to a log file (DEPS_LOG, default
# /var/log/bastiond-deps.log), whose tail is printed when a step fails.
#
# The lab runs its servers (sshd, ...) itself, inside its namespaces: none of
# them is a service of this host. Package scripts are kept from starting
# services during the install (a policy-rc.d that refuses), and a unit that
# the install enabled at boot, and that was not enabled before, is disabled
# again, saying so.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
set_name=${1:-test}

demo_packages=(
	iproute2 nftables procps util-linux   # namespaces, veth, bridges; nft; nsenter, unshare, setsid
	openssh-server openssh-client         # vm1's sshd; ssh-keygen for the lab's keys
	freerdp2-shadow-x11 winpr-utils       # vm2's RDP server; winpr-hash for its NLA SAM file
	xvfb x11-apps x11-xserver-utils       # vm2's display and a known window on it
	gnome-remote-desktop mutter xwayland  # vm2's second desktop (3391): unicode keyboard input and the clipboard
	dbus xterm xclip                      # its session bus; the sink the keyboard tests type into; its clipboard, read and set
	socat curl ca-certificates openssl    # the demo's forward; its readiness check; password hashes
	whois                                 # mkpasswd: the bcrypt hash of the lab IdP's users' password
)
test_packages=(
	sshpass freerdp2-x11                  # ssh with a password; xfreerdp for tunnel tests
	nmap                                  # scan-resistance tests
	iperf3                                # raw TCP benchmarks through the tunnel
	systemd                               # systemd-socket-activate, systemd-analyze
	systemd-container debootstrap         # test/realsystemd: a container booted with systemd as PID 1
	chromium fonts-dejavu-core            # the browser tests (web/, playwright-core drives it)
	rsyslog rsyslog-gnutls                # the collector audit shipping is tested against (TLS)
	lintian rpm                           # the package tests (test/package): lintian on the .deb, rpm -qp on the .rpm
	haproxy                               # the balancer in front of 443 (proxy TestHAProxy: mode tcp, send-proxy-v2, checks)
	postgresql                            # internal/pgtest: a throwaway server the store's tests start themselves (initdb, pg_ctl); the install's own cluster service is disabled below
)
# `make demo CLUSTER=1`: the lab's cluster mode runs these too.
cluster_packages=(haproxy postgresql)
case $set_name in
demo) packages=("${demo_packages[@]}") ;;
demo-cluster) packages=("${demo_packages[@]}" "${cluster_packages[@]}") ;;
test) packages=("${demo_packages[@]}" "${test_packages[@]}") ;;
*)
	echo "test/deps.sh: unknown package set \"$set_name\"; usage: test/deps.sh demo|demo-cluster|test" >&2
	exit 2
	;;
esac
# node and npm build web/ (and drive the browser in tests). A node installed
# some other way (nodesource, nvm) will do if it is 18 or newer: Debian's npm
# package would conflict with nodesource's nodejs, so it is only asked for
# when node or npm is missing or too old.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ! command -v npm >/dev/null || [ "$node_major" -lt 18 ]; then
	packages+=(nodejs npm)
fi

if [ "$(id -u)" != 0 ]; then
	echo "test/deps.sh: not root; not installing system packages" >&2
	exit 0
fi

log=${DEPS_LOG:-/var/log/bastiond-deps.log}
log_started=

# step WHAT CMD...: runs CMD with its output in the log, printing one line.
step() {
	local what=$1 start=$SECONDS rc=0
	shift
	if [ -z "$log_started" ]; then
		mkdir -p "$(dirname "$log")"
		echo "== test/deps.sh $set_name, $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >>"$log"
		echo "deps: full log in $log"
		log_started=1
	fi
	printf 'deps: %s ... ' "$what"
	echo "== $what: $*" >>"$log"
	"$@" >>"$log" 2>&1 </dev/null || rc=$?
	if [ $rc != 0 ]; then
		echo "FAILED (exit $rc)"
		echo "deps: last lines of $log:" >&2
		tail -n 30 "$log" | sed 's/^/  /' >&2
		exit $rc
	fi
	echo "done ($((SECONDS - start)) s)"
}

# boot_enabled: one line per unit or init script enabled at boot, from the
# files that say so (systemctl needs no running systemd to read or change
# them): the systemd .wants/.requires links and the SysV rc?.d start links.
boot_enabled() {
	{
		find /etc/systemd/system -mindepth 2 -maxdepth 2 \( -path '*.wants/*' -o -path '*.requires/*' \) -printf 'unit %f\n' 2>/dev/null
		find /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d -maxdepth 1 -name 'S*' -printf 'sysv %f\n' 2>/dev/null |
			sed -E 's/^sysv S[0-9]*/sysv /'
	} | sort -u
}

# disable_new_boot_units BEFORE: disables (and stops, under a running
# systemd) what was enabled at boot since the snapshot BEFORE was taken.
disable_new_boot_units() {
	local before=$1 kind name done_units=" "
	while read -r kind name; do
		case $kind in
		unit)
			case $name in *.service | *.socket | *.timer | *.path) ;; *) continue ;; esac
			echo "deps: the install enabled $name at boot (it was not before); disabling it: the lab runs its own servers"
			systemctl disable "$name" >>"$log" 2>&1 || echo "deps: could not disable $name; see $log" >&2
			if [ -d /run/systemd/system ]; then
				systemctl stop "$name" >>"$log" 2>&1 || true
			fi
			done_units+="${name%.service} "
			;;
		sysv)
			# systemctl disable has handled the init script of a unit of the
			# same name (through systemd-sysv-install).
			[[ $done_units == *" $name "* ]] && continue
			[ -e "/etc/init.d/$name" ] || continue
			echo "deps: the install enabled /etc/init.d/$name at boot (it was not before); disabling it"
			update-rc.d "$name" disable >>"$log" 2>&1 || echo "deps: could not disable $name; see $log" >&2
			;;
		esac
	done < <(comm -13 <(printf '%s\n' "$before") <(boot_enabled))
}

# policy-rc.d: while apt-get runs, package scripts may not start services.
# An existing policy (the admin's, a container's) is left alone; ours carries
# a marker, so a copy left behind by an interrupted run is recognised and
# removed.
policy=/usr/sbin/policy-rc.d
policy_marker="# written by bastiond's test/deps.sh while it installs packages"
created_policy=
remove_policy() {
	if [ -n "$created_policy" ]; then
		rm -f "$policy"
		created_policy=
	fi
}
if [ -f "$policy" ] && grep -qxF "$policy_marker" "$policy"; then
	created_policy=1 # an interrupted run's; ours to remove
fi
trap remove_policy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${#missing[@]} packages for the $set_name: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n%s\nexit 101\n' "$policy_marker" >"$policy.tmp"
		chmod 0755 "$policy.tmp"
		created_policy=1
		mv "$policy.tmp" "$policy"
	fi
	enabled_before=$(boot_enabled)
	step "apt-get update" apt-get update -q
	step "apt-get install" apt-get install -y -q --no-install-recommends "${missing[@]}"
	remove_policy
	disable_new_boot_units "$enabled_before"
fi
remove_policy

# guacd, Apache Guacamole's proxy (the desktop benchmark's peer; tests only).
# Debian ships it last in bullseye (11): bookworm, trixie and sid have none.
# Its packages, and the two libraries they need that bookworm no longer has
# (libssl1.1, libwebp6), come from bullseye through apt's own client with a
# source list and package lists of their own, under a temporary directory:
# this host's sources stay as they are and nothing else is taken from
# bullseye. The rest of what they need (FreeRDP 2, cairo, ...) is bookworm's.
guacd_packages=(guacd libguac19 libguac-client-rdp0 libssl1.1 libwebp6)
install_guacd() {
	local tmp rc=0
	tmp=$(mktemp -d)
	chmod 0755 "$tmp"
	printf 'deb http://deb.debian.org/debian bullseye main\ndeb http://deb.debian.org/debian-security bullseye-security main\n' >"$tmp/sources.list"
	mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs"
	local own=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache")
	{
		apt-get -q update && apt-get -q "${own[@]}" update &&
			(cd "$tmp/debs" && apt-get -q "${own[@]}" download "${guacd_packages[@]}") &&
			apt-get install -y -q --no-install-recommends "$tmp"/debs/*.deb
	} || rc=$?
	rm -rf "$tmp"
	return $rc
}
guacd_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}\n' guacd libguac-client-rdp0 2>/dev/null | grep -cx installed)" = 2 ]
}
# Only on Debian: elsewhere (Ubuntu) apt has no key for Debian's archive.
debian_host() { [ -r /etc/os-release ] && [ "$(. /etc/os-release && echo "$ID")" = debian ]; }
if [ "$set_name" = test ] && ! guacd_installed && ! debian_host; then
	echo "deps: guacd not installed: it comes from Debian's bullseye archive, and this host is not Debian" \
		"(TestGuacdHandshake and BenchmarkGuacd skip without it)"
elif [ "$set_name" = test ] && ! guacd_installed; then
	export DEBIAN_FRONTEND=noninteractive
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n%s\nexit 101\n' "$policy_marker" >"$policy.tmp"
		chmod 0755 "$policy.tmp"
		created_policy=1
		mv "$policy.tmp" "$policy"
	fi
	enabled_before=$(boot_enabled)
	step "guacd from bullseye (Debian's last with it)" install_guacd
	remove_policy
	disable_new_boot_units "$enabled_before"
fi

if [ -f "$root/go.mod" ] && command -v go >/dev/null; then
	# Silent and quick when the module cache has everything already.
	if ! (cd "$root" && go mod download) >/dev/null 2>&1; then
		step "go mod download" bash -c "cd '$root' && go mod download -x"
	fi
fi

# web/'s packages, from the lock file; nothing to do (and no network) when
# node_modules is newer than the lock.
web=$root/web
if [ -f "$web/package-lock.json" ] && command -v npm >/dev/null &&
	{ [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; }; then
	step "npm ci (web/)" bash -c "cd '$web' && npm ci --no-audit --no-fund && touch node_modules/.package-lock.json"
fi

# Dex, the lab's OpenID provider (Dex v2.45.1: its module's pseudo-version at
# that tag). Built as a dependency of a throwaway module, so that its own
# go.mod pins what it links; the binary is written to a temporary name and
# renamed, so an interrupted build leaves no half a binary behind.
dex_version=v2.45.1
dex_module=github.com/dexidp/dex@v0.0.0-20260303133905-11d2eeb52b42
dex_bin=${DEX_CACHE:-/var/cache/bastiond-test}/dex-$dex_version/dex
# sudo's PATH may lack Go's usual place.
go=${GO:-go}
if ! command -v "$go" >/dev/null && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
build_dex() {
	local tmp rc=0
	tmp=$(mktemp -d)
	mkdir -p "$(dirname "$dex_bin")"
	printf 'module dexbuild\n\ngo 1.25\n\nrequire %s\n' "${dex_module/@/ }" >"$tmp/go.mod"
	printf '//go:build tools\n\npackage dexbuild\n\nimport _ "github.com/dexidp/dex/cmd/dex"\n' >"$tmp/tools.go"
	(
		cd "$tmp" &&
			GOFLAGS=-mod=mod "$go" mod tidy &&
			GOFLAGS=-mod=mod "$go" build -trimpath -ldflags "-X main.version=$dex_version" -o "$dex_bin.tmp" github.com/dexidp/dex/cmd/dex &&
			"$dex_bin.tmp" version &&
			mv "$dex_bin.tmp" "$dex_bin"
	) || rc=$?
	rm -rf "$tmp" "$dex_bin.tmp"
	return $rc
}
if [ ! -x "$dex_bin" ]; then
	command -v "$go" >/dev/null || {
		echo "test/deps.sh: Go is needed to build Dex (the lab's OpenID provider); install Go $(sed -n 's/^go //p' "$root/go.mod") or newer" >&2
		exit 1
	}
	step "build Dex $dex_version into $(dirname "$dex_bin") (once, about 90 s)" build_dex
fi
