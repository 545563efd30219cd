# The lab's cluster mode (`lab.sh up --cluster`), sourced by lab.sh: two
# bastion instances behind a TCP balancer, sharing a PostgreSQL database.
#
#   bl-client ─ eth0 | pub0 ─ bl-lb ─ fe0 (bridge) ─┬─ pub0 bl-bastion  (instance a) vnet0 ─┐
#                      HAProxy :443 (PROXY v2)     ├─ pub0 bl-bastion2 (instance b) vnet0 ─┤
#                                                  └─ eth0 bl-ops (an operator: each instance directly)
#                      UDP 443: per-flow DNAT                                              │
#   bl-vnet: vnet0, a plain switch ─┬─ bl-vm1, bl-vm2, bl-rogue (as in the single lab) ───┘
#                                   └─ bl-db   PostgreSQL :5432, TLS
#
# The users' name, bastion.lab.example, is the balancer's public addresses
# (203.0.113.1, 2001:db8:cafe::1). The instances sit on a front segment
# (192.0.2.0/24, 2001:db8:fe::/64) behind it and in the bastion subnet on the
# VNet, in attached mode: no instance is the VNet's bridge, each machine
# guards itself with the rules `bastionctl policy export` gives (the bastion
# subnet and nobody else), which the lab loads as the machine's admin would.

NS_LB=bl-lb
NS_BASTION2=bl-bastion2
NS_VNET=bl-vnet
NS_DB=bl-db
NS_OPS=bl-ops
CLUSTER_NS=("$NS_LB" "$NS_BASTION2" "$NS_VNET" "$NS_DB" "$NS_OPS")

LB_FE4=192.0.2.1 LB_FE6=2001:db8:fe::1
BASTION_FE4=192.0.2.11 BASTION_FE6=2001:db8:fe::11
BASTION2_FE4=192.0.2.12 BASTION2_FE6=2001:db8:fe::12
# An operator's host on the front segment: it reaches each instance
# directly, past the balancer, as a user would (no PROXY header).
OPS4=192.0.2.50 OPS6=2001:db8:fe::50
BASTION2_VNET4=198.18.0.5 BASTION2_VNET6=2001:db8:b5::5
DB4=198.18.2.10 DB6=2001:db8:b5:2::10
DB_PORT=5432
# The name the instances serve, which HAProxy's checks must give (the demo
# serves localhost).
LAB_SERVER_NAME=${LAB_SERVER_NAME:-bastion.lab.example}

# make_cluster_links: the public link ends at the balancer, which has a
# front bridge to both instances; the VNet is a switch of its own.
make_cluster_links() {
	ip -n "$NS_CLIENT" link add eth0 address 02:b5:00:00:02:10 type veth peer name pub0 address 02:b5:00:00:02:01 netns "$NS_LB"
	ip -n "$NS_CLIENT" addr add "$CLIENT4/24" dev eth0
	ip -n "$NS_CLIENT" addr add "$CLIENT6/64" dev eth0 nodad
	idp_addresses
	ip -n "$NS_CLIENT" link set eth0 up
	ip -n "$NS_LB" addr add "$BASTION_PUB4/24" dev pub0
	ip -n "$NS_LB" addr add "$BASTION_PUB6/64" dev pub0 nodad
	ip -n "$NS_LB" link set pub0 up

	ip -n "$NS_LB" link add fe0 address 02:b5:00:00:03:01 type bridge
	# Frames between hosts of the front segment (the operator and an
	# instance) are bridged, not routed: keep them out of the balancer's
	# inet forward chain, which passes only the users' QUIC.
	bridge_without_netfilter "$NS_LB"
	ip -n "$NS_LB" addr add "$LB_FE4/24" dev fe0
	ip -n "$NS_LB" addr add "$LB_FE6/64" dev fe0 nodad
	ip -n "$NS_LB" link set fe0 up
	local ns a4 a6 mac port
	for ns in "$NS_BASTION" "$NS_BASTION2"; do
		if [ "$ns" = "$NS_BASTION" ]; then
			a4=$BASTION_FE4 a6=$BASTION_FE6 mac=02:b5:00:00:03:11 port=fe-a
		else
			a4=$BASTION2_FE4 a6=$BASTION2_FE6 mac=02:b5:00:00:03:12 port=fe-b
		fi
		ip -n "$ns" link add pub0 address "$mac" type veth peer name "$port" netns "$NS_LB"
		nsx "$NS_LB" sysctl -qw "net.ipv6.conf.$port.disable_ipv6=1"
		ip -n "$NS_LB" link set "$port" master fe0 up
		ip -n "$ns" addr add "$a4/24" dev pub0
		ip -n "$ns" addr add "$a6/64" dev pub0 nodad
		ip -n "$ns" link set pub0 up
		# Replies to users (QUIC reaches the instances with the user's own
		# address) go back through the balancer.
		ip -n "$ns" route add 203.0.113.0/24 via "$LB_FE4"
		ip -n "$ns" -6 route add 2001:db8:cafe::/64 via "$LB_FE6"
	done
	ip -n "$NS_OPS" link add eth0 address 02:b5:00:00:03:50 type veth peer name fe-ops netns "$NS_LB"
	nsx "$NS_LB" sysctl -qw net.ipv6.conf.fe-ops.disable_ipv6=1
	ip -n "$NS_LB" link set fe-ops master fe0 up
	ip -n "$NS_OPS" addr add "$OPS4/24" dev eth0
	ip -n "$NS_OPS" addr add "$OPS6/64" dev eth0 nodad
	ip -n "$NS_OPS" link set eth0 up

	ip -n "$NS_VNET" link add vnet0 address 02:b5:00:00:00:01 type bridge
	bridge_without_netfilter "$NS_VNET"
	ip -n "$NS_VNET" link set vnet0 up
	switch_port "$NS_BASTION" vnet0 bastionp 02:b5:00:00:00:04 "$BASTION_VNET4" "$BASTION_VNET6"
	switch_port "$NS_BASTION2" vnet0 bastion2p 02:b5:00:00:00:05 "$BASTION2_VNET4" "$BASTION2_VNET6"
	switch_port "$NS_VM1" eth0 vm1p 02:b5:00:00:01:11 "$VM1_4" "$VM1_6"
	switch_port "$NS_VM2" eth0 vm2p 02:b5:00:00:01:12 "$VM2_4" "$VM2_6"
	switch_port "$NS_ROGUE" eth0 roguep 02:b5:00:00:01:66 "$ROGUE4" "$ROGUE6"
	switch_port "$NS_DB" eth0 dbp 02:b5:00:00:02:0a "$DB4" "$DB6"
	for ns in "$NS_BASTION" "$NS_BASTION2"; do
		nsx "$ns" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
	done
}

# switch_port NS IFACE PORT MAC ADDR4 ADDR6: NS's IFACE, cabled to a port of
# bl-vnet's switch.
switch_port() { cable "$@" "$NS_VNET" vnet0; }

# start_udp_balancer: QUIC (UDP 443) from users goes to one instance per
# flow, chosen by a hash of the user's address and port and kept by
# conntrack, as a cloud's L4 UDP balancer does; the instance sees the user's
# own address. The balancer forwards nothing else but the instances'
# connections to the OpenID provider (idp.lab.example), masqueraded.
start_udp_balancer() {
	nsx "$NS_LB" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	nsx "$NS_LB" nft -f - <<EOF
table inet lab_lb {
	chain lb_prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "pub0" ip daddr $BASTION_PUB4 udp dport 443 dnat ip to jhash ip saddr . udp sport mod 2 map { 0 : $BASTION_FE4, 1 : $BASTION2_FE4 }
		iifname "pub0" ip6 daddr $BASTION_PUB6 udp dport 443 dnat ip6 to jhash ip6 saddr . udp sport mod 2 map { 0 : $BASTION_FE6, 1 : $BASTION2_FE6 }
	}
	chain lb_forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "pub0" oifname "fe0" udp dport 443 ct status dnat accept
		iifname "fe0" oifname "pub0" ip daddr $IDP4 tcp dport $IDP_PORT accept
		iifname "fe0" oifname "pub0" ip6 daddr $IDP6 tcp dport $IDP_PORT accept
	}
	# The instances reach the OpenID provider on the public side as any
	# host behind a NAT would: from the balancer's public address.
	chain lb_postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "pub0" ip saddr $LB_FE4/24 ip daddr $IDP4 tcp dport $IDP_PORT masquerade
		oifname "pub0" ip6 saddr $LB_FE6/64 ip6 daddr $IDP6 tcp dport $IDP_PORT masquerade
	}
}
EOF
}

# start_postgres: a throwaway PostgreSQL cluster in bl-db, owned by the
# postgres user, TLS only from the bastion subnet (scram-sha-256; the tests
# make a database of their own for each cluster they start); the
# bastiond role and database, and the DSN and CA files the instances read.
start_postgres() {
	local dir=$LAB_DIR/db bin
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -x "$bin/initdb" ] || die "PostgreSQL is not installed (test/deps.sh installs postgresql)"
	id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"
	mkdir -p "$dir"
	local pw
	pw=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 || true)
	# A CA of the lab's own, and the server's certificate for its names.
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bastiond lab CA" \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=db" \
		-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
	printf 'subjectAltName=DNS:db,IP:%s,IP:%s\n' "$DB4" "$DB6" >"$dir/san.ext"
	openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
		-extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
	chmod 0644 "$dir/ca.crt"
	mkdir -p "$dir/data" "$dir/run"
	chown postgres:postgres "$dir/data" "$dir/run" "$dir/server.key" "$dir/server.crt"
	chmod 0600 "$dir/server.key"
	chmod 0700 "$dir/data"
	setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$dir/data" -U postgres \
		--auth-local=peer --auth-host=reject -E UTF8 >"$LAB_DIR/log/initdb.log" 2>&1 ||
		fail_service initdb "initdb failed"
	cat >>"$dir/data/postgresql.conf" <<EOF
# The lab's settings (test/lab/cluster.sh).
listen_addresses = '$DB4,$DB6'
port = $DB_PORT
unix_socket_directories = '$dir/run'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
ssl_min_protocol_version = 'TLSv1.3'
password_encryption = 'scram-sha-256'
EOF
	cat >"$dir/data/pg_hba.conf" <<EOF
local   all       postgres                   peer
hostssl all       bastiond  $BASTION_SUBNET4  scram-sha-256
hostssl all       bastiond  $BASTION_SUBNET6  scram-sha-256
EOF
	start postgres "$NS_DB" setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$dir/data"
	local ok=
	for _ in $(seq 100); do
		if nsx "$NS_DB" setpriv --reuid=postgres --regid=postgres --init-groups "$bin/psql" -h "$dir/run" -p "$DB_PORT" -U postgres \
			-qAtc 'select 1' >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.1
	done
	[ -n "$ok" ] || fail_service postgres "PostgreSQL did not start"
	nsx "$NS_DB" setpriv --reuid=postgres --regid=postgres --init-groups "$bin/psql" -h "$dir/run" -p "$DB_PORT" -U postgres -q \
		-v ON_ERROR_STOP=1 -v pw="$pw" >/dev/null <<'EOF' || fail_service postgres "could not create the bastiond role and database"
CREATE ROLE bastiond LOGIN PASSWORD :'pw';
CREATE DATABASE bastiond OWNER bastiond;
EOF
	# What an admin puts in the file store.postgres.dsn_file names: the
	# password is there, never in bastiond.yaml.
	printf 'postgres://bastiond:%s@db:%s/bastiond?sslmode=verify-full\n' "$pw" "$DB_PORT" >"$dir/dsn"
	chmod 0640 "$dir/dsn"
}

# start_haproxy: the TCP balancer on 443, PROXY protocol v2 to both
# instances, whose readiness it checks as the README's example does (an
# instance lists the balancer's front addresses in listen.proxy_protocol).
start_haproxy() {
	local dir=$LAB_DIR/lb
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
# The lab's balancer (test/lab/cluster.sh).
global
	log stderr format short local0 info
	# Within the lab's file descriptor limit (two per connection).
	maxconn 9000
	pidfile $dir/haproxy.pid
	# 'show stat' here says which instance the checks find up.
	stats socket $dir/admin.sock mode 600 level admin

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 5s
	timeout client 1h
	timeout server 1h
	timeout tunnel 1h
	# A connection an instance refuses (it died, its checks have not seen
	# it yet) is tried again on the other one: users see no failure.
	retries 2
	option redispatch 1

frontend bastion
	bind $BASTION_PUB4:443
	bind [$BASTION_PUB6]:443 v6only
	default_backend instances

backend instances
	balance leastconn
	option httpchk
	http-check send meth GET uri /.well-known/bastiond/ready ver HTTP/1.1 hdr Host $LAB_SERVER_NAME
	http-check expect status 200
	default-server send-proxy-v2 check check-ssl check-sni $LAB_SERVER_NAME verify none inter 1s fall 2 rise 1
	server a $BASTION_FE4:443
	server b $BASTION2_FE4:443
EOF
	haproxy -c -q -f "$dir/haproxy.cfg" >"$LAB_DIR/log/haproxy-check.log" 2>&1 || fail_service haproxy-check "haproxy refuses its configuration"
	start haproxy "$NS_LB" haproxy -W -db -f "$dir/haproxy.cfg"
}

# write_cluster_hosts: the cluster's names, on top of write_hosts'.
write_cluster_hosts() {
	local ns
	for ns in "$NS_BASTION" "$NS_BASTION2" "$NS_DB"; do
		mkdir -p "/etc/netns/$ns"
		printf '%s db db-v4\n%s db db-v6\n' "$DB4" "$DB6" >>"/etc/netns/$ns/hosts"
	done
	for ns in "$NS_LB" "$NS_BASTION2"; do
		cp "/etc/netns/$NS_BASTION/hosts" "/etc/netns/$ns/hosts"
	done
	for ns in "$NS_LB" "$NS_OPS"; do
		mkdir -p "/etc/netns/$ns"
		printf '%s bastion-a\n%s bastion-a\n%s bastion-b\n%s bastion-b\n' "$BASTION_FE4" "$BASTION_FE6" "$BASTION2_FE4" "$BASTION2_FE6" \
			>>"/etc/netns/$ns/hosts"
	done
}
