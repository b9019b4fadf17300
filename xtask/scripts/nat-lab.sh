#!/usr/bin/env bash
# The NAT lab: real Linux NATs in network namespaces (see docs/nat-lab.md).
#
#   p2plab-srv   203.0.113.10 + .11 on a bridge (the "public" segment),
#                runs `p2p serve --listen 203.0.113.10:3478 --alt-listen 203.0.113.11:3479`
#   p2plab-rN    a NAT router: WAN 203.0.113.10N on the bridge, LAN 10.0.N.1/24
#   p2plab-cN    a client 10.0.N.2 behind router N, runs `p2p nat-type --json`
#
#   router 1: MASQUERADE                         -> EIM mapping, APD filtering
#   router 2: MASQUERADE --random-fully          -> APD mapping, APD filtering
#   router 3: SNAT + DNAT of all inbound UDP     -> EIM mapping, EI filtering
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
ROUTERS=(1 2 3)
SERVER="203.0.113.10:3478"
ALT="203.0.113.11:3479"
NAMESPACES=()
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-natlab.XXXXXX")"

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  for ns in "${NAMESPACES[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  dump_logs_on_failure "$rc" nat-lab
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "nat-lab: FAIL: $*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
new_ns() {
  # A namespace left by a crashed run of this script is ours to replace.
  ip netns del "$1" 2>/dev/null || true
  ip netns add "$1"
  NAMESPACES+=("$1")
  in_ns "$1" ip link set lo up
}

echo "nat-lab: building p2p"
cargo build --quiet -p p2p-cli
P2P="${CARGO_TARGET_DIR:-$ROOT/target}/debug/p2p"
[ -x "$P2P" ] || fail "$P2P not found"

# ---------------------------------------------------------------- the public segment
new_ns "$SRV"
in_ns "$SRV" ip link add br0 type bridge
in_ns "$SRV" ip link set br0 up
in_ns "$SRV" ip addr add 203.0.113.10/24 dev br0
in_ns "$SRV" ip addr add 203.0.113.11/24 dev br0

# ---------------------------------------------------------------- routers and clients
for n in "${ROUTERS[@]}"; do
  r="$PREFIX-r$n"
  c="$PREFIX-c$n"
  new_ns "$r"
  new_ns "$c"
  # WAN: router <-> bridge port in the server namespace (created in place).
  ip -n "$r" link add wan type veth peer name "sw$n" netns "$SRV"
  in_ns "$SRV" ip link set "sw$n" master br0
  in_ns "$SRV" ip link set "sw$n" up
  in_ns "$r" ip addr add "203.0.113.10$n/24" dev wan
  in_ns "$r" ip link set wan up
  # LAN: router <-> client.
  ip -n "$r" link add lan type veth peer name eth0 netns "$c"
  in_ns "$r" ip addr add "10.0.$n.1/24" dev lan
  in_ns "$r" ip link set lan up
  in_ns "$c" ip addr add "10.0.$n.2/24" dev eth0
  in_ns "$c" ip link set eth0 up
  in_ns "$c" ip route add default via "10.0.$n.1"
  in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
done

# Router 1: plain MASQUERADE (ports preserved when free).
in_ns "$PREFIX-r1" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
# Router 2: a fresh random port for every new 5-tuple.
in_ns "$PREFIX-r2" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
# Router 3: source NAT keeps the port; every inbound UDP packet is let in to
# the client on the same port, whoever sends it ("full cone").
in_ns "$PREFIX-r3" iptables -t nat -A POSTROUTING -o wan -p udp -j SNAT --to-source 203.0.113.103
in_ns "$PREFIX-r3" iptables -t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination 10.0.3.2

# ---------------------------------------------------------------- the server
ip netns exec "$SRV" "$P2P" serve --listen "$SERVER" --alt-listen "$ALT" --software "p2p nat-lab" \
  >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 50); do
  if in_ns "$PREFIX-c1" "$P2P" stun "$SERVER" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || fail "the server in $SRV does not answer on $SERVER"
# That probe made a mapping in router 1: start each scenario clean.
in_ns "$PREFIX-r1" conntrack -F >/dev/null 2>&1 || true

# ---------------------------------------------------------------- the scenarios
declare -A WANT_MAPPING=([1]=endpoint-independent [2]=address-and-port-dependent [3]=endpoint-independent)
declare -A WANT_FILTERING=([1]=address-and-port-dependent [2]=address-and-port-dependent [3]=endpoint-independent)
declare -A NAME=([1]="MASQUERADE" [2]="MASQUERADE --random-fully" [3]="SNAT + DNAT (full cone)")

field() { # field JSON KEY -> value (string or bare)
  sed -E "s/.*\"$2\":\"?([^\",}]*)\"?.*/\1/" <<<"$1"
}

rows=()
failed=0
for n in "${ROUTERS[@]}"; do
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
[ "$failed" = 0 ] || fail "a NAT was named wrongly (expected: 1 EIM/APDF, 2 APDM/APDF, 3 EIM/EIF)"
echo "nat-lab: all passed"
