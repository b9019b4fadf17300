#!/usr/bin/env bash
# The NAT lab: real Linux NATs in network namespaces (see docs/nat-lab.md).
#
#   p2plab-srv   203.0.113.10 + .11 on a bridge (the "public" segment), runs
#                `p2p serve`: STUN (RFC 5780 with --alt-listen), TURN over
#                UDP/TCP/TLS and signaling on 203.0.113.10:8080
#   p2plab-rN    a NAT router: WAN 203.0.113.10N on the bridge, LAN 10.0.N.1/24
#   p2plab-cN    a client 10.0.N.2 behind router N (router 1 also has
#                p2plab-c1b, 10.0.1.3, on the same LAN)
#
#   router 1: MASQUERADE                         -> EIM mapping, APD filtering
#   router 2: MASQUERADE --random-fully          -> APD mapping, APD filtering
#   router 3: SNAT + DNAT of all inbound UDP     -> EIM mapping, EI filtering
#             (and of all inbound TCP: a 1:1 NAT for ICE-TCP's srflx)
#   router 4: MASQUERADE (a second one)          -> EIM mapping, APD filtering
#   router 5: MASQUERADE --random-fully (second) -> APD mapping, APD filtering
#   router 6: MASQUERADE, UDP dropped; only TCP to the server's ports and
#             to p2plab-pub passes
#   p2plab-pub   203.0.113.50 on the bridge: a public host, no NAT
#
# Part 1 checks that `p2p nat-type` names routers 1-5 right. Part 2 runs two
# `p2p connect` peers per scenario (same LAN, NAT pairs, UDP blocked, a
# lossy slow link) and asserts the path ICE ends on; it prints a table.
#
# Only namespaces this script creates are touched (every link is created
# inside them); all of it is deleted on exit, failure included. Needs root;
# outside CI (CI != true) it skips when not root or without iptables.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "nat-lab: $1" >&2
    exit 1
  fi
  echo "nat-lab: skipped: $1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (network namespaces and iptables)"
command -v ip >/dev/null 2>&1 || skip_or_fail "iproute2 (ip) not installed"
command -v iptables >/dev/null 2>&1 || skip_or_fail "iptables not installed"

PREFIX="p2plab"
SRV="$PREFIX-srv"
ROUTERS=(1 2 3 4 5 6)
NATTYPE_ROUTERS=(1 2 3 4 5)
SERVER_IP="203.0.113.10"
SERVER="$SERVER_IP:3478"
ALT="203.0.113.11:3479"
TLS_PORT=5349
SIGNALING="ws://$SERVER_IP:8080/ws"
TURN_USER="lab"
TURN_PASS="nat-lab-secret"
PUB_IP="203.0.113.50"
SCENARIO_TIMEOUT=45 # seconds a scenario's peers may take, all told
NAMESPACES=()
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-natlab.XXXXXX")"

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  del_namespaces
  dump_logs_on_failure "$rc" nat-lab
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "nat-lab: FAIL: $*" >&2; exit 1; }

echo "nat-lab: building p2p"
cargo build --quiet -p p2p-cli
# Where cargo put it: CARGO_TARGET_DIR (relative to the workspace) or target/.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
P2P="$TARGET_DIR/debug/p2p"
[ -x "$P2P" ] || fail "$P2P not found"

# ---------------------------------------------------------------- the public segment
# (in_ns, new_ns, public_segment, add_router, add_client and nat: lib.sh)
public_segment "$SRV" 203.0.113.10 203.0.113.11

# ---------------------------------------------------------------- routers and clients
for n in "${ROUTERS[@]}"; do
  add_router "$SRV" "$PREFIX-r$n" "$n"
  new_ns "$PREFIX-c$n"
  add_client "$PREFIX-r$n" "$PREFIX-c$n" lp0 "10.0.$n.2" "10.0.$n.1"
done
# A second client on router 1's LAN, for the same-LAN scenario.
new_ns "$PREFIX-c1b"
add_client "$PREFIX-r1" "$PREFIX-c1b" lp1 10.0.1.3 10.0.1.1

# Router 1: plain MASQUERADE (ports preserved when free).
# Router 2: a fresh random port for every new 5-tuple.
# Router 3: source NAT keeps the port; every inbound UDP packet is let in to
# the client on the same port, whoever sends it ("full cone").
# Routers 4 and 5: second copies of 1 and 2, so that a pair of NATs of one kind exists.
# (nat also makes routers 1, 2, 4 and 5 drop unsolicited UDP to their own
# WAN address: see lib.sh and docs/nat-lab.md.)
nat "$PREFIX-r1" eim-apdf
nat "$PREFIX-r2" apdm
nat "$PREFIX-r3" full-cone 203.0.113.103 10.0.3.2
nat "$PREFIX-r4" eim-apdf
nat "$PREFIX-r5" apdm
# Router 6: a firewall that lets nothing out but TCP to the server's TURN
# (3478), TURN-over-TLS (5349) and signaling (8080) ports, and TCP to the
# public peer p2plab-pub (ICE-TCP); UDP is dropped.
in_ns "$PREFIX-r6" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
in_ns "$PREFIX-r6" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
in_ns "$PREFIX-r6" iptables -A FORWARD -i lan -o wan -p tcp -d "$SERVER_IP" \
  -m multiport --dports 3478,$TLS_PORT,8080 -j ACCEPT
in_ns "$PREFIX-r6" iptables -A FORWARD -i lan -o wan -p tcp -d "$PUB_IP" -j ACCEPT
# ... and TCP to router 3's public address (the 1:1 NAT of the ICE-TCP
# server-reflexive scenario).
in_ns "$PREFIX-r6" iptables -A FORWARD -i lan -o wan -p tcp -d 203.0.113.103 -j ACCEPT
in_ns "$PREFIX-r6" iptables -A FORWARD -i lan -o wan -j DROP
# p2plab-pub: a host with a public address and no NAT or firewall, on the
# public segment (the peer a UDP-blocked client reaches over ICE-TCP).
new_ns "$PREFIX-pub"
ip -n "$PREFIX-pub" link add eth0 type veth peer name swpub netns "$SRV"
in_ns "$SRV" ip link set swpub master br0
in_ns "$SRV" ip link set swpub up
in_ns "$PREFIX-pub" ip addr add "$PUB_IP/24" dev eth0
in_ns "$PREFIX-pub" ip link set eth0 up

# ---------------------------------------------------------------- IPv6 behind routers 1 and 4
# Home routers do not translate IPv6 (RFC 6092: no NAT66; a stateful
# firewall instead, RFC 6092 REC-11): global addresses on the LANs, and in
# FORWARD outbound flows and their answers pass, nothing unsolicited comes
# in. Dual-stack clients p2plab-c1s and p2plab-c4s (IPv4 10.0.N.4 behind
# the router's NAT44, IPv6 2001:db8:N::4) keep the IPv4-only clients'
# scenarios as they were. The server also listens on 2001:db8:10::10.
SERVER6="2001:db8:10::10"
in_ns "$SRV" sysctl -qw net.ipv6.conf.all.forwarding=1
in_ns "$SRV" ip -6 addr add "$SERVER6/64" dev br0 nodad
for n in 1 4; do
  r="$PREFIX-r$n"
  c="$PREFIX-c${n}s"
  new_ns "$c"
  add_client "$r" "$c" "lp6" "10.0.$n.4" "10.0.$n.1"
  in_ns "$r" sysctl -qw net.ipv6.conf.all.forwarding=1
  in_ns "$r" ip -6 addr add "2001:db8:10::10$n/64" dev wan nodad
  in_ns "$r" ip -6 addr add "2001:db8:$n::1/64" dev lan nodad
  in_ns "$r" ip -6 route add default via "$SERVER6"
  in_ns "$SRV" ip -6 route add "2001:db8:$n::/64" via "2001:db8:10::10$n"
  in_ns "$c" ip -6 addr add "2001:db8:$n::4/64" dev eth0 nodad
  in_ns "$c" ip -6 route add default via "2001:db8:$n::1"
  in_ns "$r" ip6tables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_ns "$r" ip6tables -A FORWARD -p ipv6-icmp -j ACCEPT
  in_ns "$r" ip6tables -A FORWARD -i lan -o wan -j ACCEPT
  in_ns "$r" ip6tables -A FORWARD -j DROP
done

# ---------------------------------------------------------------- a certificate for turns:
# A throwaway CA and a leaf for IP 203.0.113.10 (what the peers' turns: URI names).
TLS_ARGS=()
TLS_SKIP=""
if command -v openssl >/dev/null 2>&1; then
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 2 \
    -subj /CN=p2p-nat-lab-ca >"$WORK/openssl.log" 2>&1
  openssl req "${ec[@]}" -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" \
    -subj "/CN=$SERVER_IP" >>"$WORK/openssl.log" 2>&1
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    "$SERVER_IP" >"$WORK/leaf.ext"
  openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" >>"$WORK/openssl.log" 2>&1
  TLS_ARGS=(--tls-listen "$SERVER_IP:$TLS_PORT" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
else
  TLS_SKIP="openssl not installed (no certificate for turns:)"
fi

# ---------------------------------------------------------------- the server
# --user-quota 0: every scenario's peers allocate with the one lab user, and
# allocations outlive the peers (p2p connect does not deallocate on close), so
# the default quota of 10 would refuse the sixth scenario.
ip netns exec "$SRV" "$P2P" serve --listen "$SERVER" --listen "[$SERVER6]:3478" \
  --alt-listen "$ALT" --software "p2p nat-lab" \
  --realm nat-lab --user "$TURN_USER:$TURN_PASS" --relay-ip "$SERVER_IP" --relay-ip "$SERVER6" \
  --user-quota 0 \
  --signaling "$SERVER_IP:8080" --no-page "${TLS_ARGS[@]}" \
  >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 50); do
  if in_ns "$PREFIX-c1" "$P2P" stun "$SERVER" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || fail "the server in $SRV does not answer on $SERVER"
grep -q "signaling on" "$WORK/serve.log" || fail "the server serves no signaling"
# That probe made a mapping in router 1: start each scenario clean.
flush_conntrack() {
  local n
  for n in "${ROUTERS[@]}"; do in_ns "$PREFIX-r$n" conntrack -F >/dev/null 2>&1 || true; done
}
flush_conntrack

# Router 6 must really block UDP and let TCP to the server through.
if timeout 10 ip netns exec "$PREFIX-c6" "$P2P" stun "$SERVER" >"$WORK/r6-udp.log" 2>&1; then
  fail "router 6 lets UDP to $SERVER through"
fi
timeout 10 ip netns exec "$PREFIX-c6" "$P2P" stun --tcp "$SERVER" >"$WORK/r6-tcp.log" 2>&1 \
  || fail "router 6 blocks TCP to $SERVER: $(cat "$WORK/r6-tcp.log")"
echo "nat-lab: router 6 drops UDP to $SERVER and passes TCP"
# Router 4's IPv6 firewall must drop what nobody inside asked for: its
# last rule (DROP) counts the probe.
v6_drops() { in_ns "$PREFIX-r4" ip6tables -L FORWARD -v -x -n | awk '$3 == "DROP" { print $1 }'; }
before="$(v6_drops)"
timeout 5 ip netns exec "$PREFIX-c1s" "$P2P" stun "[2001:db8:4::4]:3478" >"$WORK/r4-v6.log" 2>&1 || true
[ "$(v6_drops)" -gt "$before" ] || fail "router 4's IPv6 firewall did not drop an unsolicited packet"
timeout 10 ip netns exec "$PREFIX-c1s" "$P2P" stun "[$SERVER6]:3478" >"$WORK/c1s-v6.log" 2>&1 \
  || fail "no IPv6 STUN from behind router 1: $(cat "$WORK/c1s-v6.log")"
echo "nat-lab: IPv6 reaches the server from behind router 1; router 4 filters unsolicited IPv6"

# ---------------------------------------------------------------- part 1: p2p nat-type
EIM=endpoint-independent
APD=address-and-port-dependent
declare -A WANT_MAPPING=([1]=$EIM [2]=$APD [3]=$EIM [4]=$EIM [5]=$APD)
declare -A WANT_FILTERING=([1]=$APD [2]=$APD [3]=$EIM [4]=$APD [5]=$APD)
declare -A NAME=([1]="MASQUERADE" [2]="MASQUERADE --random-fully" [3]="SNAT + DNAT (full cone)"
  [4]="MASQUERADE (r4)" [5]="MASQUERADE --random-fully (r5)")

field() { # field JSON KEY -> value (string or bare)
  sed -E "s/.*\"$2\":\"?([^\",}]*)\"?.*/\1/" <<<"$1"
}

rows=()
failed=0
for n in "${NATTYPE_ROUTERS[@]}"; do
  out="$(in_ns "$PREFIX-c$n" "$P2P" nat-type --json "$SERVER" 2>"$WORK/nat-type-$n.log")" \
    || fail "nat-type behind router $n: $(cat "$WORK/nat-type-$n.log")"
  echo "nat-lab: router $n (${NAME[$n]}): $out"
  mapping="$(field "$out" mapping)"
  filtering="$(field "$out" filtering)"
  verdict=ok
  if [ "$(field "$out" nat)" != true ] || [ "$mapping" != "${WANT_MAPPING[$n]}" ] \
    || [ "$filtering" != "${WANT_FILTERING[$n]}" ]; then
    verdict=FAIL
    failed=1
  fi
  rows+=("$(printf '%-28s %-22s %-28s %-28s %-5s %-5s %s' "${NAME[$n]}" "$(field "$out" mapped)" \
    "$mapping" "$filtering" "$(field "$out" hairpinning)" "$(field "$out" port_preserved)" "$verdict")")
done

echo
printf '%-28s %-22s %-28s %-28s %-5s %-5s %s\n' "NAT (router)" "mapped" "mapping" "filtering" \
  "hairp" "port=" "verdict"
for row in "${rows[@]}"; do echo "$row"; done
echo
[ "$failed" = 0 ] || fail "a NAT was named wrongly (expected: 1, 4 EIM/APDF; 2, 5 APDM/APDF; 3 EIM/EIF)"

# ---------------------------------------------------------------- part 2: ICE through the NATs
# shellcheck source=nat-lab-ice.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat-lab-ice.sh"
echo "nat-lab: all passed"
