#!/usr/bin/env bash
# The bastiond lab: a small network built from network namespaces and veth
# pairs only, used by the tests, the benchmarks and `sudo make demo`.
#
#   bl-client ──(eth0 | pub0)── bl-bastion ── vnet0 (bridge) ──┬── bl-vm1   OpenSSH sshd :22
#   public user                 the bastion                      ├── bl-vm2   FreeRDP shadow :3389 (NLA), :3390 (TLS),
#                                                                │            GNOME Remote Desktop :3391 (NLA)
#   + idp.lab.example: Dex,                                      └── bl-rogue nothing: an intruder on the VNet
#     the OpenID provider, :5556
#
# Every address exists only inside these namespaces. See README.md beside this file.
#
#   lab.sh up      build it (removing any stale copy first); writes $LAB_DIR/lab.env
#   lab.sh up --cluster   the cluster mode instead: two instances behind a
#                  balancer, sharing PostgreSQL (cluster.sh has its picture)
#   lab.sh down    remove everything it built; safe after a partial or interrupted up
#   lab.sh status  namespaces, processes, listening sockets
#   lab.sh env     print lab.env
#   lab.sh exec HOST CMD...   run CMD on HOST (client, bastion, vm1, vm2, rogue)
#
# Each host is a network namespace (/run/netns/bl-HOST) and a UTS namespace
# with its own hostname ($LAB_DIR/uts/bl-HOST); the lab's servers run in both.
set -euo pipefail

LAB_DIR=${LAB_DIR:-/run/bastiond-lab}
LAB_USER=lab
LAB_UID=4242
LAB_DISPLAY=${LAB_DISPLAY:-:71}

NS_CLIENT=bl-client
NS_BASTION=bl-bastion
NS_VM1=bl-vm1
NS_VM2=bl-vm2
NS_ROGUE=bl-rogue
BASE_NS=("$NS_CLIENT" "$NS_BASTION" "$NS_VM1" "$NS_VM2" "$NS_ROGUE")
UTS_DIR=$LAB_DIR/uts
# shellcheck source=cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
# The namespaces of the lab that is up (the cluster mode adds its own);
# down removes those of both.
ALL_NS=("${BASE_NS[@]}")
if [ -e "$LAB_DIR/cluster" ]; then
	ALL_NS+=("${CLUSTER_NS[@]}")
fi

# Public side: documentation prefixes (RFC 5737, RFC 3849).
CLIENT4=203.0.113.10 CLIENT6=2001:db8:cafe::10
BASTION_PUB4=203.0.113.1 BASTION_PUB6=2001:db8:cafe::1
# The OpenID provider (Dex) stands on the public side too, on addresses of
# its own in the client's namespace: idp.lab.example.
IDP4=203.0.113.20 IDP6=2001:db8:cafe::20 IDP_PORT=5556
IDP_NAME=idp.lab.example
LAB_IDP_ISSUER=https://$IDP_NAME:$IDP_PORT/dex
LAB_IDP_CLIENT_ID=bastiond
# Dex's users (password: LAB_PASSWORD): ana is in group lab-ops, ned in
# visitors, a group no role names.
LAB_SSO_USER=ana@lab.example LAB_SSO_NOROLE_USER=ned@lab.example
# The Dex that test/deps.sh builds (keep the version in step with it).
DEX_VERSION=v2.45.1
# VNet: the benchmarking range (RFC 2544) and documentation IPv6. The bastion
# sits in its dedicated subnet (198.18.0.0/26, 2001:db8:b5::/64); the
# machines live outside it, all on one L2 segment.
BASTION_VNET4=198.18.0.4 BASTION_VNET6=2001:db8:b5::4
VM1_4=198.18.1.11 VM1_6=2001:db8:b5:1::11
VM2_4=198.18.1.12 VM2_6=2001:db8:b5:1::12
ROGUE4=198.18.1.66 ROGUE6=2001:db8:b5:1::66
BASTION_SUBNET4=198.18.0.0/26 BASTION_SUBNET6=2001:db8:b5::/64
VNET_PREFIX4=16 VNET_PREFIX6=48
VM2_RDP_NLA_PORT=3389 VM2_RDP_TLS_PORT=3390
# vm2's second desktop: GNOME Remote Desktop (unicode keyboard input and the
# clipboard, which FreeRDP's shadow server lacks), on addresses of its own
# on vm2's eth0: it is a target of its own, and an address belongs to one.
VM2_DESK_PORT=3391
VM2_DESK_4=198.18.1.13 VM2_DESK_6=2001:db8:b5:1::13

log() { echo "lab: $*" >&2; }
die() {
	echo "lab: $*" >&2
	exit 1
}

# nsx NS CMD...: runs CMD in namespace NS: its network, its hostname (UTS)
# and, through `ip netns exec`, its files from /etc/netns/NS. Every tool execs
# in place, so CMD keeps the PID the caller started.
nsx() {
	local ns=$1
	shift
	nsenter --uts="$UTS_DIR/$ns" ip netns exec "$ns" "$@"
}

# --- processes -------------------------------------------------------------

# start NAME NS CMD...: runs CMD in namespace NS in its own session (so that
# the demo's Ctrl-C reaches only the demo; `down` stops it by PID), logging
# to $LAB_DIR/log/NAME.log and recording the PID in $LAB_DIR/pids/NAME.
start() {
	local name=$1 ns=$2
	shift 2
	setsid nsenter --uts="$UTS_DIR/$ns" ip netns exec "$ns" "$@" >"$LAB_DIR/log/$name.log" 2>&1 </dev/null &
	local pid=$!
	# setsid, nsenter, `ip netns exec` and env all exec in place, so $! is the
	# service; record the program it ends up as (past env's VAR=value words).
	local prog=$1
	if [ "$prog" = env ]; then
		shift
		while [[ $1 == *=* ]]; do shift; done
		prog=$1
	elif [ "$prog" = setpriv ]; then
		shift
		while [[ $1 == --* ]]; do shift; done
		prog=$1
	fi
	echo "$pid $(basename "$prog")" >"$LAB_DIR/pids/$name"
}

# alive PIDFILE: true when the recorded process still runs the recorded program.
alive() {
	local pid comm
	read -r pid comm <"$1" || return 1
	[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${comm:0:15}" ]
}

# running PID: true while PID exists and is not a zombie (a zombie has
# exited; only its parent's wait is missing).
running() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# stop_pids PID...: SIGTERM to all of them at once, then one deadline of 3 s
# for all together, then SIGKILL to what remains.
stop_pids() {
	local pid left
	[ $# -gt 0 ] || return 0
	kill -TERM "$@" 2>/dev/null || true
	for _ in $(seq 60); do
		left=()
		for pid in "$@"; do running "$pid" && left+=("$pid"); done
		[ ${#left[@]} -gt 0 ] || return 0
		set -- "${left[@]}"
		sleep 0.05
	done
	log "still running after 3 s, killing: $*"
	kill -KILL "$@" 2>/dev/null || true
}

stop_all() {
	local f pid comm ns pids=()
	if [ -d "$LAB_DIR/pids" ]; then
		for f in "$LAB_DIR"/pids/*; do
			[ -e "$f" ] || continue
			if alive "$f"; then
				read -r pid comm <"$f"
				pids+=("$pid")
			fi
			rm -f "$f"
		done
	fi
	# Anything else still inside a lab namespace was started by the lab too
	# (an interrupted `up` may not have recorded it).
	for ns in "${ALL_NS[@]}"; do
		while read -r pid; do
			[[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
		done < <(ip netns pids "$ns" 2>/dev/null || true)
	done
	stop_pids "${pids[@]}"
}

# --- hostnames -------------------------------------------------------------------

# host_of NS: the hostname of a lab namespace (bl-vm1 -> vm1).
host_of() { echo "${1#bl-}"; }

# make_uts: one persistent UTS namespace per host, bind-mounted at
# $UTS_DIR/NS (unshare keeps it alive with that mount), with the host's name.
make_uts() {
	local ns f
	mkdir -p "$UTS_DIR"
	for ns in "${ALL_NS[@]}"; do
		f=$UTS_DIR/$ns
		: >"$f"
		unshare --uts="$f" hostname "$(host_of "$ns")"
	done
}

# remove_uts: unmount the UTS namespaces (a process still inside one keeps
# it alive until it exits) and any other mount left under $LAB_DIR.
remove_uts() {
	local m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$LAB_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}

# --- topology ----------------------------------------------------------------

make_namespaces() {
	local ns
	make_uts
	for ns in "${ALL_NS[@]}"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		# Addresses are fixed and unique: skip duplicate address detection so
		# IPv6 is usable at once.
		nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
	done
}

make_public_link() {
	ip -n "$NS_CLIENT" link add eth0 address 02:b5:00:00:02:10 type veth peer name pub0 address 02:b5:00:00:02:01 netns "$NS_BASTION"
	ip -n "$NS_CLIENT" addr add "$CLIENT4/24" dev eth0
	ip -n "$NS_CLIENT" addr add "$CLIENT6/64" dev eth0 nodad
	idp_addresses
	ip -n "$NS_CLIENT" link set eth0 up
	ip -n "$NS_BASTION" addr add "$BASTION_PUB4/24" dev pub0
	ip -n "$NS_BASTION" addr add "$BASTION_PUB6/64" dev pub0 nodad
	ip -n "$NS_BASTION" link set pub0 up
}

make_vnet() {
	# The bastion neither routes nor forwards: the VNet is reachable only
	# through sessions it terminates and dials itself.
	nsx "$NS_BASTION" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
	# A new namespace starts with br_netfilter passing bridged frames to the
	# inet hooks; the firewall filters the VNet in the bridge family instead,
	# so turn that off here (the sysctls exist once a bridge does).
	ip -n "$NS_BASTION" link add vnet0 address 02:b5:00:00:00:04 type bridge
	bridge_without_netfilter "$NS_BASTION"
	ip -n "$NS_BASTION" addr add "$BASTION_VNET4/$VNET_PREFIX4" dev vnet0
	ip -n "$NS_BASTION" addr add "$BASTION_VNET6/$VNET_PREFIX6" dev vnet0 nodad
	ip -n "$NS_BASTION" link set vnet0 up
	attach_vm "$NS_VM1" vm1p 02:b5:00:00:01:11 "$VM1_4" "$VM1_6"
	attach_vm "$NS_VM2" vm2p 02:b5:00:00:01:12 "$VM2_4" "$VM2_6"
	attach_vm "$NS_ROGUE" roguep 02:b5:00:00:01:66 "$ROGUE4" "$ROGUE6"
}

# attach_vm NS PORT MAC ADDR4 ADDR6: a machine's eth0, cabled to a port of vnet0.
attach_vm() { cable "$1" eth0 "$2" "$3" "$4" "$5" "$NS_BASTION" vnet0; }

# cable NS IFACE PORT MAC ADDR4 ADDR6 SWITCH BRIDGE: NS's IFACE (on the VNet's
# prefixes), cabled to PORT of BRIDGE in namespace SWITCH.
cable() {
	local ns=$1 iface=$2 port=$3 mac=$4 a4=$5 a6=$6 sw=$7 br=$8
	ip -n "$ns" link add "$iface" address "$mac" type veth peer name "$port" netns "$sw"
	nsx "$sw" sysctl -qw "net.ipv6.conf.$port.disable_ipv6=1"
	ip -n "$sw" link set "$port" master "$br" up
	ip -n "$ns" addr add "$a4/$VNET_PREFIX4" dev "$iface"
	ip -n "$ns" addr add "$a6/$VNET_PREFIX6" dev "$iface" nodad
	ip -n "$ns" link set "$iface" up
}

# bridge_without_netfilter NS: a new namespace starts with br_netfilter
# passing bridged frames to the inet hooks; NS's bridges keep them out (the
# sysctls exist once a bridge does).
bridge_without_netfilter() {
	local s
	for s in iptables ip6tables arptables; do
		[ -e "/proc/sys/net/bridge/bridge-nf-call-$s" ] || continue
		nsx "$1" sysctl -qw "net.bridge.bridge-nf-call-$s=0"
	done
}

# --- vm1: OpenSSH ---------------------------------------------------------------

start_vm1() {
	local dir="$LAB_DIR/vm1" home="$LAB_DIR/vm1/home/$LAB_USER"
	mkdir -p "$dir" "$home/.ssh" "$LAB_DIR/keys"
	chmod 0755 "$dir" "$LAB_DIR/vm1/home" "$home"

	# The lab user exists only in vm1's view of /etc: `ip netns exec` bind-
	# mounts /etc/netns/NS/* over /etc/*, so the host never has a lab account.
	local etc=/etc/netns/$NS_VM1 hash
	mkdir -p "$etc"
	hash=$(openssl passwd -6 "$LAB_PASSWORD")
	cp /etc/passwd /etc/group "$etc/"
	cp /etc/shadow "$etc/shadow"
	chmod 0640 "$etc/shadow"
	echo "$LAB_USER:x:$LAB_UID:$LAB_UID:bastiond lab user:$home:/bin/bash" >>"$etc/passwd"
	echo "$LAB_USER:x:$LAB_UID:" >>"$etc/group"
	echo "$LAB_USER:$hash:19000:0:99999:7:::" >>"$etc/shadow"

	ssh-keygen -q -t ed25519 -N '' -C "lab@bastiond-lab" -f "$LAB_DIR/keys/lab_ed25519"
	cp "$LAB_DIR/keys/lab_ed25519.pub" "$home/.ssh/authorized_keys"
	chmod 0700 "$home/.ssh"
	chmod 0600 "$home/.ssh/authorized_keys"
	chown -R "$LAB_UID:$LAB_UID" "$home"

	ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"
	ssh-keygen -q -t rsa -b 3072 -N '' -f "$dir/ssh_host_rsa_key"
	cat >"$dir/sshd_config" <<EOF
# vm1's sshd, started by test/lab/lab.sh inside $NS_VM1.
Port 22
AddressFamily any
ListenAddress 0.0.0.0
ListenAddress ::
HostKey $dir/ssh_host_ed25519_key
HostKey $dir/ssh_host_rsa_key
PidFile $dir/sshd.pid
AllowUsers $LAB_USER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication yes
# Without PAM (its session modules assume a booted system), sshd checks
# passwords against vm1's shadow file itself.
UsePAM no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
# Certificates signed by the bastion's CA: tests write its public key
# (bastionctl ca show) here; sshd reads the file at each login.
TrustedUserCAKeys $dir/trusted_user_ca_keys
StrictModes yes
PrintMotd no
Subsystem sftp internal-sftp
EOF
	: >"$dir/trusted_user_ca_keys"
	chmod 0644 "$dir/trusted_user_ca_keys"
	# sshd wants its privilege-separation directory.
	mkdir -p /run/sshd
	chmod 0755 /run/sshd
	start sshd "$NS_VM1" /usr/sbin/sshd -D -e -f "$dir/sshd_config"
}

# --- vm2: a display and FreeRDP's shadow server ---------------------------------

start_vm2() {
	local dir="$LAB_DIR/vm2"
	mkdir -p "$dir/home"
	# A stale lock from a killed Xvfb would stop the new one.
	local n=${LAB_DISPLAY#:}
	if [ -e "/tmp/.X$n-lock" ] && ! kill -0 "$(tr -d ' ' <"/tmp/.X$n-lock")" 2>/dev/null; then
		rm -f "/tmp/.X$n-lock" "/tmp/.X11-unix/X$n"
	fi
	start xvfb "$NS_VM2" Xvfb "$LAB_DISPLAY" -nolisten tcp -screen 0 1280x800x24
	local ok=
	for _ in $(seq 50); do
		if DISPLAY=$LAB_DISPLAY nsx "$NS_VM2" xsetroot -solid '#1d3b53' 2>/dev/null; then
			ok=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ok" ] || fail_service xvfb "Xvfb did not start on $LAB_DISPLAY"
	# A known window that keeps changing: something to see and to measure.
	start xclock "$NS_VM2" env DISPLAY="$LAB_DISPLAY" xclock -update 1 -geometry 300x300+100+100

	winpr-hash -u "$LAB_USER" -p "$LAB_PASSWORD" -f sam >"$dir/sam"
	chmod 0600 "$dir/sam"
	# "[::]" is one dual-stack listener (the default is IPv4 only).
	# HOME keeps the shadow server's generated certificate inside the lab.
	start rdp-nla "$NS_VM2" env HOME="$dir/home" DISPLAY="$LAB_DISPLAY" \
		freerdp-shadow-cli "/port:$VM2_RDP_NLA_PORT" "/bind-address:[::]" /sec:nla "/sam-file:$dir/sam" +auth
	start rdp-tls "$NS_VM2" env HOME="$dir/home" DISPLAY="$LAB_DISPLAY" \
		freerdp-shadow-cli "/port:$VM2_RDP_TLS_PORT" "/bind-address:[::]" /sec:tls -auth
}

# --- vm2's second desktop: GNOME Remote Desktop, headless -------------------------
#
# FreeRDP's shadow server ignores unicode keyboard events and opens no
# clipboard channel, so vm2 also runs GNOME Remote Desktop 43 (--headless) on
# a headless mutter (a virtual monitor, Xwayland), all on a private session
# bus, as root, with HOME and XDG_RUNTIME_DIR under $LAB_DIR/vm2/desk. The
# session's one window is an xterm whose shell appends each line typed to
# $LAB_DIR/vm2/desk/typed: the keyboard tests read back there what they typed.
# Mutter picks the Xwayland display (the first free one) and writes it, with
# its X authority file, to desk/xenv; lab.env carries both (VM2_DESK_DISPLAY,
# VM2_DESK_XAUTHORITY) for `lab.sh exec vm2 env DISPLAY=... xclip ...`.

# desk_env: the environment every process of the desktop shares.
desk_env() {
	local d=$LAB_DIR/vm2/desk
	echo HOME="$d/home" XDG_RUNTIME_DIR="$d/run" XDG_CONFIG_HOME="$d/home/.config" \
		XDG_DATA_HOME="$d/home/.local/share" XDG_CACHE_HOME="$d/home/.cache" \
		DBUS_SESSION_BUS_ADDRESS="unix:path=$d/run/bus" GSETTINGS_BACKEND=keyfile \
		LANG=C.UTF-8 NO_AT_BRIDGE=1
}

# wait_for WHAT NAME TEST...: up to 10 s until TEST succeeds.
wait_for() {
	local what=$1 name=$2
	shift 2
	for _ in $(seq 100); do
		"$@" 2>/dev/null && return 0
		sleep 0.1
	done
	fail_service "$name" "$what"
}

start_vm2_desk() {
	local d=$LAB_DIR/vm2/desk env
	mkdir -p "$d/run" "$d/home"
	chmod 0700 "$d/run"
	: >"$d/typed"
	ip -n "$NS_VM2" addr add "$VM2_DESK_4/$VNET_PREFIX4" dev eth0
	ip -n "$NS_VM2" addr add "$VM2_DESK_6/$VNET_PREFIX6" dev eth0 nodad
	read -ra env <<<"$(desk_env)"
	start desk-dbus "$NS_VM2" env "${env[@]}" dbus-daemon --session --nofork --address="unix:path=$d/run/bus"
	wait_for "the desktop's session bus did not start" desk-dbus test -S "$d/run/bus"
	# PipeWire carries the screen from mutter to GNOME Remote Desktop; its
	# session manager links the two.
	start desk-pipewire "$NS_VM2" env "${env[@]}" pipewire
	wait_for "PipeWire did not start" desk-pipewire test -S "$d/run/pipewire-0"
	start desk-pw-session "$NS_VM2" env "${env[@]}" pipewire-media-session

	# Mutter types a character it is sent (GNOME Remote Desktop turns RDP's
	# unicode keyboard events into keysyms) only if its keymap has a key for
	# it, and plain mutter's keymap is US English (it asks localed, which the
	# lab has not). Its keymap files are looked up in XDG_CONFIG_HOME/xkb
	# first: there "us" is US English (latin's keys) with the characters the
	# keyboard tests type on AltGr (level 3), as a German or Spanish
	# machine's layout has some of them. Mutter takes the first key that
	# has a character and presses only Shift or AltGr with it (latin has
	# Omega on Shift+AltGr+Q: it goes on AltGr+Q).
	mkdir -p "$d/home/.config/xkb/symbols"
	cat >"$d/home/.config/xkb/symbols/us" <<'EOF'
// vm2's desktop (bastiond's lab): US English, and on AltGr the characters
// the keyboard tests type that US English lacks.
default partial alphanumeric_keys modifier_keys
xkb_symbols "basic" {
	include "latin"
	name[Group1] = "English (US, bastiond lab)";
	key <AC02> { [ s, S, ssharp ] };
	key <AD03> { [ e, E, eacute ] };
	key <AD04> { [ r, R, ecircumflex ] };
	key <AD07> { [ u, U, udiaeresis ] };
	key <AB06> { [ n, N, ntilde ] };
	key <AD01> { [ q, Q, Greek_OMEGA ] };
	key <AC04> { [ f, F, U4E2D ] };
	key <AC05> { [ g, G, EuroSign ] };
	include "level3(ralt_switch)"
};
EOF

	# No key repeat: on a loaded machine a key's release can reach mutter
	# after the repeat delay, and a test's "a" would arrive as "aaaa".
	mkdir -p "$d/home/.config/glib-2.0/settings"
	printf '[org/gnome/desktop/peripherals/keyboard]\nrepeat=false\n' >"$d/home/.config/glib-2.0/settings/keyfile"

	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/tls.key" -out "$d/tls.crt" -days 30 \
		-subj /CN=vm2 -addext subjectAltName=DNS:vm2 2>/dev/null
	chmod 0600 "$d/tls.key"
	local args
	for args in "set-tls-cert $d/tls.crt" "set-tls-key $d/tls.key" "set-credentials $LAB_USER $LAB_PASSWORD" \
		disable-view-only enable; do
		# shellcheck disable=SC2086 # words on purpose; the lab's paths and password have no spaces
		env "${env[@]}" grdctl --headless rdp $args >>"$LAB_DIR/log/desk-grdctl.log" 2>&1 ||
			fail_service desk-grdctl "grdctl --headless rdp ${args%% *} failed"
	done

	# Mutter leaves its X display locks behind when the lab stops it with
	# the rest; a lock whose process is gone is stale (as X servers judge).
	local lock pid n
	for lock in /tmp/.X*-lock; do
		[ -e "$lock" ] || continue
		pid=$(tr -d ' ' <"$lock")
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			n=${lock#/tmp/.X}
			rm -f "$lock" "/tmp/.X11-unix/X${n%-lock}"
		fi
	done
	rm -f "$d/xenv"
	start desk-mutter "$NS_VM2" env "${env[@]}" mutter --wayland --headless --virtual-monitor 1280x800 -- \
		sh -c "echo \"\$DISPLAY \$XAUTHORITY\" >'$d/xenv.tmp' && mv '$d/xenv.tmp' '$d/xenv' && exec xterm -u8 -geometry 120x30+0+0 -e sh -c 'exec cat >>$d/typed'"
	wait_for "mutter did not start the desktop (no Xwayland display in $d/xenv)" desk-mutter test -s "$d/xenv"
	# LAB_DESK_DEBUG=all: its debug messages too, in its log.
	start desk-grd "$NS_VM2" env "${env[@]}" G_MESSAGES_DEBUG="${LAB_DESK_DEBUG:-}" /usr/libexec/gnome-remote-desktop-daemon --headless --rdp-port "$VM2_DESK_PORT"
}

# --- the OpenID provider: Dex ------------------------------------------------------

# dex_bin: the Dex binary test/deps.sh builds (LAB_DEX overrides).
dex_bin() { echo "${LAB_DEX:-${DEX_CACHE:-/var/cache/bastiond-test}/dex-$DEX_VERSION/dex}"; }

# dex_preflight: what the IdP needs, checked before anything is built.
dex_preflight() {
	[ -x "$(dex_bin)" ] || die "no Dex $DEX_VERSION at $(dex_bin) (the lab's OpenID provider): build it with 'sudo bash test/deps.sh test' (or demo), once, about 90 s"
	command -v mkpasswd >/dev/null || die "mkpasswd is missing (the IdP's password hash): 'sudo bash test/deps.sh test' installs it (package whois)"
}

# idp_addresses: the IdP's own addresses on the client's public link. The
# IPv6 one is deprecated (preferred lifetime 0): it answers, but the client's
# own connections keep $CLIENT6 as their source, as the IPv4 one (a
# secondary address of the same prefix) leaves $CLIENT4 theirs.
idp_addresses() {
	ip -n "$NS_CLIENT" addr add "$IDP4/24" dev eth0
	ip -n "$NS_CLIENT" addr add "$IDP6/64" dev eth0 nodad preferred_lft 0
}

# start_idp: Dex in the client's namespace, HTTPS on $IDP_PORT of the IdP's
# two addresses only, with a certificate from a CA of the lab's own, memory
# storage and two static users; the client bastiond with a random secret.
start_idp() {
	local dir=$LAB_DIR/idp hash uri uris=()
	mkdir -p "$dir"
	chmod 0755 "$dir"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=bastiond lab IdP CA" \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$IDP_NAME" \
		-keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
	printf 'subjectAltName=DNS:%s,DNS:idp-v4,DNS:idp-v6,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\n' "$IDP_NAME" "$IDP4" "$IDP6" >"$dir/san.ext"
	openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 30 \
		-extfile "$dir/san.ext" -out "$dir/tls.crt" 2>/dev/null
	chmod 0600 "$dir/ca.key" "$dir/tls.key"
	chmod 0644 "$dir/ca.pem"
	(umask 077 && tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$dir/client-secret") || true
	[ -s "$dir/client-secret" ] || die "could not write the IdP's client secret"
	hash=$(printf '%s\n' "$LAB_PASSWORD" | mkpasswd -m bcrypt -R 10 -s) || die "mkpasswd could not hash the password"
	# The one callback every bastion uses (https://SERVER_NAME/sso/callback),
	# for each name the lab's bastions answer to, and any the caller adds
	# (LAB_IDP_REDIRECT_URIS, space-separated: the demo's forwarded port).
	for uri in "https://bastion.lab.example/sso/callback" "https://${LAB_SERVER_NAME:-bastion.lab.example}/sso/callback" \
		${LAB_IDP_REDIRECT_URIS:-}; do
		[[ " ${uris[*]} " == *" $uri "* ]] || uris+=("$uri")
	done
	(
		umask 077
		cat >"$dir/config.yaml" <<EOF
# The lab's OpenID provider, generated by test/lab/lab.sh.
issuer: $LAB_IDP_ISSUER
storage:
  type: memory
web:
  # Dual-stack; the lab_idp table admits only the IdP's own addresses.
  https: "[::]:$IDP_PORT"
  tlsCert: $dir/tls.crt
  tlsKey: $dir/tls.key
logger:
  level: info
  format: text
oauth2:
  responseTypes: [code]
  skipApprovalScreen: true
# The password database is the only way in: the login page is its form.
enablePasswordDB: true
staticClients:
  - id: $LAB_IDP_CLIENT_ID
    name: bastiond
    secret: $(cat "$dir/client-secret")
    redirectURIs:
$(printf '      - %s\n' "${uris[@]}")
staticPasswords:
  - email: $LAB_SSO_USER
    username: ana
    name: Ana
    preferredUsername: ana
    userID: 5b0e3a4c-6a4e-4b8e-9d0a-1a2b3c4d5e01
    hash: "$hash"
    groups: [lab-ops]
  - email: $LAB_SSO_NOROLE_USER
    username: ned
    name: Ned
    preferredUsername: ned
    userID: 5b0e3a4c-6a4e-4b8e-9d0a-1a2b3c4d5e02
    hash: "$hash"
    groups: [visitors]
EOF
	)
	nsx "$NS_CLIENT" nft -f - <<EOF
table inet lab_idp {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport $IDP_PORT ip daddr != $IDP4 reject with tcp reset
		tcp dport $IDP_PORT ip6 daddr != $IDP6 reject with tcp reset
	}
}
EOF
	start dex "$NS_CLIENT" "$(dex_bin)" serve "$dir/config.yaml"
}

# wait_idp: wait until the bastion gets Dex's discovery document by its
# name over both families, checking its certificate against the lab's CA.
wait_idp() {
	local fam url=$LAB_IDP_ISSUER/.well-known/openid-configuration
	for fam in -4 -6; do
		for _ in $(seq 100); do
			if nsx "$NS_BASTION" curl -sf "$fam" --max-time 2 --cacert "$LAB_DIR/idp/ca.pem" -o /dev/null "$url"; then
				continue 2
			fi
			alive "$LAB_DIR/pids/dex" || fail_service dex "Dex exited"
			sleep 0.2
		done
		fail_service dex "Dex does not answer $url (curl $fam) from the bastion"
	done
}

fail_service() {
	local name=$1
	shift
	log "$*"
	if [ -f "$LAB_DIR/log/$name.log" ]; then
		log "last lines of $name's log:"
		tail -n 20 "$LAB_DIR/log/$name.log" >&2
	fi
	exit 1
}

# wait_port NAME ADDR PORT: wait until ADDR:PORT accepts TCP from the bastion.
wait_port() {
	local name=$1 addr=$2 port=$3
	for _ in $(seq 100); do
		if nsx "$NS_BASTION" timeout 1 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	fail_service "$name" "$name does not answer on $addr port $port"
}

# write_hosts: names for the lab's addresses, one hosts file per namespace
# (bind-mounted over /etc/hosts by `ip netns exec`). NAME resolves to both
# families, NAME-v4 and NAME-v6 to one. Names matter beyond comfort: FreeRDP
# 2's client fails NLA (NTLM MIC) and TLS against an IPv6 literal, and works
# against the same address by name.
write_hosts() {
	local vnet pub ns
	vnet=$(printf '%s\n' \
		"$BASTION_VNET4 bastion-vnet bastion-vnet-v4" "$BASTION_VNET6 bastion-vnet bastion-vnet-v6" \
		"$VM1_4 vm1 vm1-v4" "$VM1_6 vm1 vm1-v6" "$VM2_4 vm2 vm2-v4" "$VM2_6 vm2 vm2-v6" \
		"$VM2_DESK_4 vm2-desk vm2-desk-v4" "$VM2_DESK_6 vm2-desk vm2-desk-v6" \
		"$ROGUE4 rogue rogue-v4" "$ROGUE6 rogue rogue-v6")
	pub=$(printf '%s\n' "$BASTION_PUB4 bastion.lab.example bastion bastion-v4" "$BASTION_PUB6 bastion.lab.example bastion bastion-v6" \
		"$CLIENT4 client client-v4" "$CLIENT6 client client-v6" "$IDP4 $IDP_NAME idp-v4" "$IDP6 $IDP_NAME idp-v6")
	for ns in "${ALL_NS[@]}"; do
		mkdir -p "/etc/netns/$ns"
		{
			printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n'
			case $ns in
			"$NS_CLIENT") echo "$pub" ;;
			"$NS_BASTION") printf '%s\n%s\n' "$pub" "$vnet" ;;
			*) echo "$vnet" ;;
			esac
		} >"/etc/netns/$ns/hosts"
	done
}

write_env() {
	local key cluster_keys=()
	if [ -e "$LAB_DIR/cluster" ]; then
		cluster_keys=(NS_LB NS_BASTION2 NS_VNET NS_DB NS_OPS OPS4 OPS6 LB_FE4 LB_FE6 BASTION_FE4 BASTION_FE6 BASTION2_FE4 BASTION2_FE6
			BASTION2_VNET4 BASTION2_VNET6 DB4 DB6 DB_PORT)
	fi
	{
		echo "# Written by test/lab/lab.sh up; sourceable by shells."
		for key in "${cluster_keys[@]}" LAB_DIR LAB_USER LAB_PASSWORD LAB_DISPLAY NS_CLIENT NS_BASTION NS_VM1 NS_VM2 NS_ROGUE \
			CLIENT4 CLIENT6 BASTION_PUB4 BASTION_PUB6 BASTION_VNET4 BASTION_VNET6 VM1_4 VM1_6 VM2_4 VM2_6 \
			ROGUE4 ROGUE6 BASTION_SUBNET4 BASTION_SUBNET6 VM2_RDP_NLA_PORT VM2_RDP_TLS_PORT VM2_DESK_PORT VM2_DESK_4 VM2_DESK_6 \
			IDP4 IDP6 IDP_PORT LAB_IDP_ISSUER LAB_IDP_CLIENT_ID LAB_SSO_USER LAB_SSO_NOROLE_USER; do
			echo "$key=${!key}"
		done
		echo "LAB_KEY=$LAB_DIR/keys/lab_ed25519"
		echo "VM1_TRUSTED_CA=$LAB_DIR/vm1/trusted_user_ca_keys"
		echo "PUB_IFACE=pub0"
		echo "UTS_DIR=$UTS_DIR"
		echo "VNET_BRIDGE=vnet0"
		local xenv
		read -r -a xenv <"$LAB_DIR/vm2/desk/xenv"
		echo "VM2_DESK_DISPLAY=${xenv[0]}"
		echo "VM2_DESK_XAUTHORITY=${xenv[1]:-}"
		echo "VM2_DESK_TYPED=$LAB_DIR/vm2/desk/typed"
		echo "LAB_IDP_CA=$LAB_DIR/idp/ca.pem"
		echo "LAB_IDP_CLIENT_SECRET_FILE=$LAB_DIR/idp/client-secret"
		if [ -e "$LAB_DIR/cluster" ]; then
			echo "CLUSTER=1"
			echo "DB_DSN_FILE=$LAB_DIR/db/dsn"
			echo "DB_CA=$LAB_DIR/db/ca.crt"
			echo "LB_ADMIN=$LAB_DIR/lb/admin.sock"
		fi
	} >"$LAB_DIR/lab.env.tmp"
	chmod 0600 "$LAB_DIR/lab.env.tmp"
	mv "$LAB_DIR/lab.env.tmp" "$LAB_DIR/lab.env"
}

# --- commands --------------------------------------------------------------------

down() {
	stop_all
	local ns
	for ns in "${BASE_NS[@]}" "${CLUSTER_NS[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
		rm -rf "/etc/netns/$ns"
	done
	rmdir /etc/netns 2>/dev/null || true
	remove_uts
	rm -rf "$LAB_DIR"
}

up() {
	down
	trap 'rc=$?; if [ $rc != 0 ]; then log "up failed; removing the partial lab"; down; fi' EXIT
	mkdir -p "$LAB_DIR"/{pids,log,keys}
	chmod 0755 "$LAB_DIR"
	LAB_PASSWORD=${LAB_PASSWORD:-$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 16 || true)}

	dex_preflight
	ALL_NS=("${BASE_NS[@]}")
	if [ "${1:-}" = --cluster ]; then
		: >"$LAB_DIR/cluster"
		ALL_NS+=("${CLUSTER_NS[@]}")
	fi
	make_namespaces
	if [ -e "$LAB_DIR/cluster" ]; then
		make_cluster_links
		write_hosts
		write_cluster_hosts
		start_udp_balancer
		start_postgres
		start_haproxy
	else
		make_public_link
		make_vnet
		write_hosts
	fi
	start_vm1
	start_vm2
	start_vm2_desk
	start_idp
	local a
	for a in "$VM1_4" "$VM1_6"; do wait_port sshd "$a" 22; done
	for a in "$VM2_4" "$VM2_6"; do
		wait_port rdp-nla "$a" "$VM2_RDP_NLA_PORT"
		wait_port rdp-tls "$a" "$VM2_RDP_TLS_PORT"
	done
	for a in "$VM2_DESK_4" "$VM2_DESK_6"; do wait_port desk-grd "$a" "$VM2_DESK_PORT"; done
	# Its port may take connections a moment before it serves RDP on them
	# (a first test's certificate scan got no TLS): it says when it does.
	wait_for "GNOME Remote Desktop did not say it serves RDP" desk-grd grep -q "RDP server started" "$LAB_DIR/log/desk-grd.log"
	if [ -e "$LAB_DIR/cluster" ]; then
		for a in "$DB4" "$DB6"; do wait_port postgres "$a" "$DB_PORT"; done
	fi
	wait_idp
	write_env
	trap - EXIT
	log "up: client $CLIENT4/$CLIENT6 -> bastion $BASTION_PUB4/$BASTION_PUB6 | vnet $BASTION_VNET4 | vm1 $VM1_4 (ssh) vm2 $VM2_4 (rdp $VM2_RDP_NLA_PORT nla, $VM2_RDP_TLS_PORT tls, desk $VM2_DESK_4 $VM2_DESK_PORT) rogue $ROGUE4 | idp $LAB_IDP_ISSUER | $LAB_DIR/lab.env"
}

status() {
	local ns f
	for ns in "${ALL_NS[@]}"; do
		if ip netns list | grep -qw "^$ns"; then
			echo "== $ns (hostname $(nsx "$ns" hostname 2>/dev/null || echo '?'))"
			ip -n "$ns" -brief addr show | sed 's/^/   /'
			nsx "$ns" ss -Hltnu 2>/dev/null | awk '{print "   listen " $1 " " $5}'
		else
			echo "== $ns (absent)"
		fi
	done
	if [ -d "$LAB_DIR/pids" ]; then
		for f in "$LAB_DIR"/pids/*; do
			[ -e "$f" ] || continue
			if alive "$f"; then echo "process $(basename "$f"): running ($(cut -d' ' -f1 "$f"))"; else echo "process $(basename "$f"): DEAD"; fi
		done
	fi
}

[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"
case "${1:-}" in
up) up "${2:-}" ;;
down) down ;;
status) status ;;
env) cat "$LAB_DIR/lab.env" ;;
exec)
	[ $# -ge 3 ] || die "usage: lab.sh exec HOST CMD... (HOST: client, bastion, vm1, vm2, rogue)"
	ns=bl-${2#bl-}
	[[ " ${ALL_NS[*]} " == *" $ns "* ]] || die "exec: no lab host \"$2\" (client, bastion, vm1, vm2, rogue)"
	[ -e "/run/netns/$ns" ] && [ -e "$UTS_DIR/$ns" ] || die "exec: the lab is not up (lab.sh up)"
	shift 2
	nsx "$ns" "$@"
	;;
*) die "usage: lab.sh up|down|status|env|exec HOST CMD..." ;;
esac
