#!/usr/bin/env bash
# `sudo make demo`: bring the lab up, run bastiond in the bastion namespace on
# a generated configuration, forward the host's loopback port 8443 to the
# bastion's public address (through the lab's client namespace, so the demo
# browser is a user on the public side like any other), print the URL and the
# credentials, and tear everything down on Ctrl-C. With CLUSTER=1, the lab's
# cluster mode instead: two instances behind HAProxy on PostgreSQL
# (test/demo-cluster.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(realpath "${1:-$root/bin}")
port=${DEMO_PORT:-8443}
lab="$root/test/lab/lab.sh"

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces): sudo make demo"
[ -x "$bin/bastiond" ] || die "no $bin/bastiond: run make build"
command -v socat >/dev/null || die "socat missing: run 'sudo make deps'"

pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "demo: stopping"
	# bastiond first, so that it drains and writes its records.
	for pid in "${pids[@]}"; do
		pkill -TERM -P "$pid" 2>/dev/null || true # socat's forked children
		kill -TERM "$pid" 2>/dev/null || true
	done
	# One deadline for all of them, not one each.
	for _ in $(seq 100); do
		local left=()
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
		[ ${#left[@]} -gt 0 ] || break
		sleep 0.05
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	if declare -F remove_idp_name >/dev/null; then remove_idp_name; fi
	bash "$lab" down >/dev/null 2>&1 || true
	echo "demo: lab removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# demo_inventory is the lab's machines, as the configuration lists them
# (lab.env sourced).
demo_inventory() {
	cat <<YAML
inventory:
  targets:
    - name: vm1
      description: Debian with OpenSSH
      addresses: [$VM1_4, "$VM1_6"]
      ports: {ssh: 22}
      tags: [linux]
    - name: vm2
      description: FreeRDP shadow server (NLA on $VM2_RDP_NLA_PORT, TLS on $VM2_RDP_TLS_PORT)
      addresses: [$VM2_4, "$VM2_6"]
      ports: {rdp: $VM2_RDP_NLA_PORT, tunnel: [$VM2_RDP_TLS_PORT]}
      tags: [desktop]
    - name: vm2-desk
      description: GNOME desktop (GNOME Remote Desktop, 1280x800) with an xterm; keyboard layouts, clipboard and files
      addresses: [$VM2_DESK_4, "$VM2_DESK_6"]
      ports: {rdp: $VM2_DESK_PORT}
      tags: [desktop]
YAML
}

# demo_sso is the second way in (lab.env sourced): the lab's OpenID
# provider (Dex) as provider "lab", and the role its group lab-ops gets,
# mirroring the admins' reach: SSH and RDP on every machine. ned's group,
# visitors, is in no role: he signs in and sees no machines.
demo_sso() {
	cat <<YAML
auth:
  oidc:
    - name: lab
      title: Lab SSO
      issuer: $LAB_IDP_ISSUER
      client_id: $LAB_IDP_CLIENT_ID
      client_secret_file: $LAB_IDP_CLIENT_SECRET_FILE
      ca_file: $LAB_IDP_CA
      scopes: [openid, email, profile, groups]
YAML
}
demo_sso_role() {
	cat <<YAML
    - name: sso-ops
      subjects: [oidc-group:lab/lab-ops]
      targets: ["*"]
      protocols: [ssh, rdp]
YAML
}

# The IdP's callback is https://SERVER_NAME/sso/callback; the demo's
# server name is localhost, which the browser reaches on the forwarded port.
export LAB_IDP_REDIRECT_URIS="https://localhost/sso/callback https://localhost:$port/sso/callback"

# The browser on this host signs in at the IdP by its name too: its port is
# forwarded from the host's loopback (like the portal's), and while the demo
# runs /etc/hosts names it (one marked line, removed at the end; DEMO_HOSTS=no
# leaves /etc/hosts alone and says what to add).
idp_mark="# bastiond demo (test/demo.sh): the lab's IdP; removed when the demo stops"
idp_name_added=
idp_forward() {
	nsenter --uts="$UTS_DIR/$NS_CLIENT" ip netns exec "$NS_CLIENT" socat "UNIX-LISTEN:$demo/idp.sock,fork,mode=600" "TCP:$IDP4:$IDP_PORT" &
	pids+=($!)
	for _ in $(seq 50); do [ -S "$demo/idp.sock" ] && break; sleep 0.1; done
	socat "TCP4-LISTEN:$IDP_PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$demo/idp.sock" &
	pids+=($!)
	local idp_host=${LAB_IDP_ISSUER#https://}
	idp_host=${idp_host%%[:/]*}
	if ! getent ahostsv4 "$idp_host" 2>/dev/null | grep -q '^127\.0\.0\.1 '; then
		if [ "${DEMO_HOSTS:-}" = no ]; then
			echo "demo: DEMO_HOSTS=no: for Lab SSO, add '127.0.0.1 $idp_host' to /etc/hosts"
		else
			echo "demo: naming $idp_host 127.0.0.1 in /etc/hosts while the demo runs"
			printf '127.0.0.1 %s %s\n' "$idp_host" "$idp_mark" >>/etc/hosts
			idp_name_added=1
		fi
	fi
	for _ in $(seq 50); do
		curl -sf --cacert "$LAB_IDP_CA" --resolve "$idp_host:$IDP_PORT:127.0.0.1" -o /dev/null \
			"$LAB_IDP_ISSUER/.well-known/openid-configuration" && return 0
		sleep 0.1
	done
	die "the lab's IdP does not answer on 127.0.0.1:$IDP_PORT (is the port taken on this host?)"
}
# remove_idp_name: the marked line out of /etc/hosts, written in place (it
# may be a bind mount, which a rename would not replace).
remove_idp_name() {
	[ -n "$idp_name_added" ] || return 0
	local rest
	rest=$(grep -vF "$idp_mark" /etc/hosts || true)
	printf '%s\n' "$rest" >/etc/hosts
	idp_name_added=
}

if [ -n "${CLUSTER:-}" ]; then
	# shellcheck source=demo-cluster.sh
	. "$root/test/demo-cluster.sh"
	cluster_demo
	exit 0
fi

echo "demo: bringing the lab up (namespaces, sshd on vm1, FreeRDP on vm2, Dex as the OpenID provider)"
bash "$lab" up 2>&1 | sed -u 's/^lab: up: .*/demo: lab up/' 
LAB_DIR=${LAB_DIR:-/run/bastiond-lab}
# shellcheck disable=SC1091
source "$LAB_DIR/lab.env"

demo="$LAB_DIR/demo"
mkdir -p "$demo"
chmod 0700 "$demo"
admin_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 20 || true)
# ops has native tunnels only: admin's SSH is recorded, and a native tunnel
# (end-to-end encrypted) cannot be, so the bastion refuses admin one to vm1.
ops_password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 20 || true)
umask 077
printf '%s\n' "$admin_password" >"$demo/admin-password"

cat >"$demo/bastiond.yaml" <<YAML
# Generated by test/demo.sh for the lab; see systemd/bastiond.example.yaml.
listen:
  server_name: localhost
  tls: {self_signed: true}
  admin_socket: $demo/admin.sock
bastion:
  public_interface: $PUB_IFACE
  vnet_interface: $VNET_BRIDGE
  subnets: [$BASTION_SUBNET4, "$BASTION_SUBNET6"]
  mode: bridged
$(demo_inventory)
access:
  groups:
    admins: [admin]
  roles:
    - name: admins
      subjects: [group:admins]
      targets: ["*"]
      protocols: [ssh]
      record: true
      auditor: true
    - name: tunnels
      subjects: [user:ops]
      targets: ["*"]
      protocols: [tunnel]
    - name: admins-unrecorded
      subjects: [group:admins]
      targets: ["*"]
      protocols: [rdp, tunnel]
$(demo_sso_role)
$(demo_sso)
logging: {format: console, audit_file: $demo/audit.jsonl}
state_dir: $demo/state
YAML

# The daemon's system user, as the package and `make install` create it, so
# that the egress chain (invariant 13) pins it and `policy show` shows it.
if ! getent passwd bastiond >/dev/null; then
	echo "demo: creating the system user bastiond (systemd-sysusers, as make install does)"
	systemd-sysusers "$root/systemd/sysusers.d/bastiond.conf"
fi
"$bin/bastiond" -version
# In the bastion's namespaces (network, and UTS: its hostname is "bastion").
# nsenter and `ip netns exec` exec bastiond in place, so $! is its own PID.
nsenter --uts="$UTS_DIR/$NS_BASTION" ip netns exec "$NS_BASTION" "$bin/bastiond" -config "$demo/bastiond.yaml" > >(sed -u 's/^/bastiond: /') 2>&1 &
bastiond_pid=$!
pids+=("$bastiond_pid")
for _ in $(seq 100); do
	"$bin/bastionctl" --socket "$demo/admin.sock" status >/dev/null 2>&1 && break
	kill -0 "$bastiond_pid" 2>/dev/null || die "bastiond exited; see its log above"
	sleep 0.1
done
"$bin/bastionctl" --socket "$demo/admin.sock" status >/dev/null || die "bastiond did not come up"
# The state store persists in $demo/state across demo runs only if LAB_DIR
# does; a fresh lab gets a fresh admin.
users=$("$bin/bastionctl" --socket "$demo/admin.sock" users list)
for account in admin:"$admin_password" ops:"$ops_password"; do
	name=${account%%:*}
	verb=add
	grep -q "^$name " <<<"$users" && verb=passwd
	printf '%s\n' "${account#*:}" | "$bin/bastionctl" --socket "$demo/admin.sock" users "$verb" "$name" --password-stdin >/dev/null
done
# A real install pins host keys after checking them out of band; the
# demo's lab was made a moment ago by this script, so it trusts what it sees.
"$bin/bastionctl" --socket "$demo/admin.sock" hostkeys scan vm1 --pin >/dev/null || die "cannot pin vm1's host keys"
"$bin/bastionctl" --socket "$demo/admin.sock" hostkeys scan vm2 --pin >/dev/null || die "cannot pin vm2's RDP certificate"
"$bin/bastionctl" --socket "$demo/admin.sock" hostkeys scan vm2-desk --pin >/dev/null || die "cannot pin vm2-desk's RDP certificate"

# The forward: host loopback -> unix socket -> the client namespace -> the
# bastion's public address. A unix socket crosses namespaces without adding
# any interface or route to the host.
nsenter --uts="$UTS_DIR/$NS_CLIENT" ip netns exec "$NS_CLIENT" socat "UNIX-LISTEN:$demo/forward.sock,fork,mode=600" "TCP:$BASTION_PUB4:443" &
pids+=($!)
for _ in $(seq 50); do [ -S "$demo/forward.sock" ] && break; sleep 0.1; done
socat "TCP4-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$demo/forward.sock" &
pids+=($!)
if ip -6 addr show dev lo 2>/dev/null | grep -q '::1'; then
	socat "TCP6-LISTEN:$port,bind=[::1],ipv6only=1,reuseaddr,fork" "UNIX-CONNECT:$demo/forward.sock" &
	pids+=($!)
fi
for _ in $(seq 50); do
	curl -skf -o /dev/null "https://localhost:$port/" && break
	sleep 0.1
done
curl -skf -o /dev/null "https://localhost:$port/" || die "https://localhost:$port/ does not answer"
idp_forward

cat <<BANNER

  bastiond demo is running.

  Portal:        https://localhost:$port/   (self-signed certificate: accept it in the browser)
                 (only by this name: bastiond answers only its server name, so https://127.0.0.1:$port/ gets "connection closed")
  Sign in as:    admin / $admin_password
  Or with SSO:   click "Sign in with Lab SSO": the lab's OpenID provider (Dex, $LAB_IDP_ISSUER)
                 asks for $LAB_SSO_USER / $LAB_PASSWORD   (group lab-ops: role sso-ops, SSH and RDP)
                 or $LAB_SSO_NOROLE_USER / the same   (group visitors, which no role names: no machines)
                 (its certificate is from the lab's CA, $LAB_IDP_CA: accept it in the browser too)
  Machines:      vm1 (SSH, $VM1_4 / $VM1_6), vm2 (RDP, $VM2_4 / $VM2_6), vm2-desk (RDP, $VM2_DESK_4 / $VM2_DESK_6)
  Their logins:  $LAB_USER / $LAB_PASSWORD
  In the browser: click SSH on vm1 and sign in as $LAB_USER: a terminal in the page
                 (recorded; play it back under Recordings); click RDP on vm2 and
                 sign in as $LAB_USER: its desktop (an X display with a clock) in the page;
                 vm2-desk is a GNOME desktop with an xterm: type in any layout, copy and paste
                 both ways, drop files onto it (best in a window of about 1280x850: README, known limitation)
  Admin CLI:     export BASTION_SOCKET=$demo/admin.sock
                 sudo --preserve-env=BASTION_SOCKET $bin/bastionctl status   (and: sessions, users, policy show)
  Native tunnel: $bin/bastionctl login --server localhost:$port --insecure --user ops   (password $ops_password)
                 (or, as ana through Lab SSO: $bin/bastionctl login --server localhost:$port --insecure --sso)
                 ssh -o ProxyCommand='$bin/bastionctl ssh-proxy vm1' $LAB_USER@vm1
                 $bin/bastionctl tunnel vm2 --port $VM2_RDP_NLA_PORT --listen 127.0.0.1:13389
                 (the demo forwards TCP only, so the tunnel falls back from QUIC to TLS by itself)
  Audit log:     $demo/audit.jsonl

  Press Ctrl-C to stop and remove the lab.

BANNER
wait "$bastiond_pid" || true
echo "demo: bastiond exited"
