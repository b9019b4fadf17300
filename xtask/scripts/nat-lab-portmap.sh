#!/usr/bin/env bash
# The port-mapping lab (issue 14): real Linux NATs in network namespaces,
# one of them running miniupnpd (Debian package; NAT-PMP and PCP on its LAN
# port 5351), and `p2p connect` peers that ask their router for a mapping
# (by default) and offer the mapped address as a server-reflexive candidate.
#
#   p2ppm-srv  198.20.113.10 + .11 on a bridge (the "public" segment): `p2p
#              serve` (STUN with RFC 5780, TURN, signaling on :8080)
#   p2ppm-r1   MASQUERADE                -> EIM mapping, APD filtering
#   p2ppm-r2   MASQUERADE --random-fully -> APD mapping and filtering
#   p2ppm-r3   MASQUERADE --random-fully, and miniupnpd serving NAT-PMP/PCP
#              (its rules in iptables-legacy tables, where miniupnpd's
#              libiptc writes its DNAT and SNAT rules)
#   p2ppm-r4   the same, its miniupnpd serving UPnP IGD only (SSDP + SOAP;
#              no NAT-PMP/PCP), which p2p connect asks with igd-next
#   p2ppm-cN   a client 10.0.N.2 behind router N
#
# The public /24 is 198.20.113.0/24, not the TEST-NET-3 of nat-lab.sh:
# miniupnpd refuses to map ports on a reserved external address (its list
# holds the TEST-NETs). Every link is created inside this lab's namespaces;
# nothing leaves them. All is deleted on exit, failure included. Needs root;
# outside CI (CI != true) it skips when not root or without iptables,
# iptables-legacy or miniupnpd (apt-get installs miniupnpd-iptables as root).
#
# Asserts: r1 x r2 relay today (no router helps); r1 x r3 and r2 x r3 go
# direct in both join orders once r3 maps a port (lines both ways); with
# --no-port-mapping r1 x r3 relays again; every mapping is deleted when the
# peers exit (miniupnpd's chain is empty afterwards).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "nat-lab-portmap: $1" >&2
    exit 1
  fi
  echo "nat-lab-portmap: skipped: $1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (network namespaces and iptables)"
command -v ip >/dev/null 2>&1 || skip_or_fail "iproute2 (ip) not installed"
command -v iptables >/dev/null 2>&1 || skip_or_fail "iptables not installed"
command -v iptables-legacy >/dev/null 2>&1 || skip_or_fail "iptables-legacy not installed"
MINIUPNPD="${MINIUPNPD:-/usr/sbin/miniupnpd}"
if [ ! -x "$MINIUPNPD" ] && command -v apt-get >/dev/null 2>&1; then
  echo "nat-lab-portmap: installing miniupnpd-iptables (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq miniupnpd-iptables >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq miniupnpd-iptables >/dev/null 2>&1; } \
    || true
fi
[ -x "$MINIUPNPD" ] || skip_or_fail "no miniupnpd (apt-get install miniupnpd-iptables)"

PREFIX="p2ppm"
SRV="$PREFIX-srv"
export LAB_NET="198.20.113"
SERVER_IP="$LAB_NET.10"
SERVER="$SERVER_IP:3478"
ALT="$LAB_NET.11:3479"
SIGNALING="ws://$SERVER_IP:8080/ws"
TURN_USER="lab"
TURN_PASS="nat-lab-secret"
SCENARIO_TIMEOUT=45
NAMESPACES=()
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-natlab-pm.XXXXXX")"

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  del_namespaces
  dump_logs_on_failure "$rc" nat-lab-portmap
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "nat-lab-portmap: FAIL: $*" >&2; exit 1; }

echo "nat-lab-portmap: building p2p"
cargo build --quiet -p p2p-cli
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
P2P="$TARGET_DIR/debug/p2p"
[ -x "$P2P" ] || fail "$P2P not found"

# ---------------------------------------------------------------- the network
public_segment "$SRV" "$SERVER_IP" "$LAB_NET.11"
for n in 1 2 3 4; do
  add_router "$SRV" "$PREFIX-r$n" "$n"
  new_ns "$PREFIX-c$n"
  add_client "$PREFIX-r$n" "$PREFIX-c$n" lp0 "10.0.$n.2" "10.0.$n.1"
done
nat "$PREFIX-r1" eim-apdf
nat "$PREFIX-r2" apdm
# Router 3: the same NAT as router 2, in iptables-legacy, with the chains
# miniupnpd fills (as its iptables_init.sh makes them): DNAT of mapped ports
# in nat/PREROUTING, their SNAT (the mapped port kept) in nat/POSTROUTING
# before the masquerading, and the forwarding in filter/FORWARD.
# miniupnpd_router N PROTOCOLS: router N runs miniupnpd (PROTOCOLS: the
# lines that enable NAT-PMP/PCP or UPnP) over those chains.
miniupnpd_router() {
  local n=$1 ipt=(in_ns "$PREFIX-r$1" iptables-legacy)
  "${ipt[@]}" -t nat -N MINIUPNPD
  "${ipt[@]}" -t nat -A PREROUTING -i wan -j MINIUPNPD
  "${ipt[@]}" -t nat -N MINIUPNPD-POSTROUTING
  "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MINIUPNPD-POSTROUTING
  "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
  "${ipt[@]}" -t filter -N MINIUPNPD
  "${ipt[@]}" -t filter -A FORWARD -i wan ! -o wan -j MINIUPNPD
  "${ipt[@]}" -A INPUT -i wan -p udp -m conntrack --ctstate NEW -j DROP
  cat >"$WORK/miniupnpd-r$n.conf" <<EOC
ext_ifname=wan
listening_ip=lan
port=0
$2
secure_mode=yes
system_uptime=yes
lease_file=$WORK/miniupnpd-r$n.leases
uuid=5c6d1f0e-7a3b-4c2d-9e8f-0a1b2c3d4e5$n
allow 1024-65535 10.0.$n.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOC
  ip netns exec "$PREFIX-r$n" "$MINIUPNPD" -d -f "$WORK/miniupnpd-r$n.conf" \
    -P "$WORK/miniupnpd-r$n.pid" >"$WORK/miniupnpd-r$n.log" 2>&1 &
  PIDS+=($!)
}
miniupnpd_router 3 "$(printf 'enable_natpmp=yes\nenable_upnp=no')"
miniupnpd_router 4 "$(printf 'enable_natpmp=no\nenable_upnp=yes')"

ip netns exec "$SRV" "$P2P" serve --listen "$SERVER" --alt-listen "$ALT" --software "p2p nat-lab" \
  --realm nat-lab --user "$TURN_USER:$TURN_PASS" --relay-ip "$SERVER_IP" --user-quota 0 \
  --signaling "$SERVER_IP:8080" --no-page >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 50); do
  if in_ns "$PREFIX-c1" "$P2P" stun "$SERVER" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || fail "the server in $SRV does not answer on $SERVER"
sleep 0.5
grep -q "Listening for NAT-PMP/PCP" "$WORK/miniupnpd-r3.log" || fail "miniupnpd on r3 does not listen"
grep -q "HTTP listening" "$WORK/miniupnpd-r4.log" || fail "miniupnpd on r4 serves no UPnP"
flush_conntrack() {
  local n
  for n in 1 2 3 4; do in_ns "$PREFIX-r$n" conntrack -F >/dev/null 2>&1 || true; done
}
flush_conntrack

# ---------------------------------------------------------------- scenarios
ALL=(--stun "stun:$SERVER" --turn "turn:$SERVER" --turn-user "$TURN_USER" --turn-password "$TURN_PASS")
ROWS=()
FAILED=()
SCENARIO=0

json_field() { sed -nE "s/.*\"$2\":\"?([^\",}]*)\"?.*/\1/p" <<<"$1"; }

# start_peer TAG NS ROOM ARGS...: as in nat-lab-ice.sh (a line every 100 ms
# on stdin, exits once a line arrived and 500 ms passed).
start_peer() {
  local tag=$1 ns=$2 room=$3
  shift 3
  { trap '' PIPE
    for i in $(seq 1 "$((SCENARIO_TIMEOUT * 10))"); do
      echo "hello from $tag, line $i" || break
      sleep 0.1
    done 2>/dev/null; } | timeout "$SCENARIO_TIMEOUT" ip netns exec "$ns" "$P2P" connect \
    --signaling "$SIGNALING" --room "$room" --name "$tag" --json --expect-lines 1 \
    --peer-timeout 30 --timeout 30 "${ALL[@]}" "$@" >"$WORK/$tag.out" 2>"$WORK/$tag.log" &
  PEER_PIDS+=($!)
  PIDS+=($!)
}

# kind_of LINE: direct (srflx/prflx at both ends) or relay.
kind_of() {
  local l r
  l="$(json_field "$1" local_kind)"
  r="$(json_field "$1" remote_kind)"
  case "$l-$r" in
  *relay*) echo relay ;;
  srflx-srflx | srflx-prflx | prflx-srflx | prflx-prflx) echo direct ;;
  *) echo "$l-$r" ;;
  esac
}

# scenario NAME WANT "A_NS A_ARGS..." "B_NS B_ARGS...": both peers, the final
# path each one reports (ready, or a later path_changed) must be WANT.
scenario() {
  local name=$1 want=$2
  local -a a b
  set -f
  a=($3)
  b=($4)
  set +f
  SCENARIO=$((SCENARIO + 1))
  local room="natlab-pm-$SCENARIO-$$" ta="pm$SCENARIO-a" tb="pm$SCENARIO-b"
  flush_conntrack
  PEER_PIDS=()
  local t0=$SECONDS
  start_peer "$ta" "${a[0]}" "$room" "${a[@]:1}"
  start_peer "$tb" "${b[0]}" "$room" "${b[@]:1}"
  local rc_a=0 rc_b=0
  wait "${PEER_PIDS[0]}" || rc_a=$?
  wait "${PEER_PIDS[1]}" || rc_b=$?
  local la lb ka kb verdict=ok why="" ms_a ms_b mapped
  la="$(grep -E '"event":"(ready|path_changed)"' "$WORK/$ta.log" | tail -n 1 || true)"
  lb="$(grep -E '"event":"(ready|path_changed)"' "$WORK/$tb.log" | tail -n 1 || true)"
  ms_a="$(json_field "$(grep '"event":"ready"' "$WORK/$ta.log" || true)" ice_ms)"
  ms_b="$(json_field "$(grep '"event":"ready"' "$WORK/$tb.log" || true)" ice_ms)"
  ka="$(kind_of "$la")"
  kb="$(kind_of "$lb")"
  if [ -z "$la" ] || [ -z "$lb" ]; then
    verdict=FAIL why="no path (exit codes $rc_a/$rc_b)"
  elif [ "$rc_a" != 0 ] || [ "$rc_b" != 0 ]; then
    verdict=FAIL why="a peer failed after connecting (exit codes $rc_a/$rc_b)"
  elif [ "$ka" != "$want" ] || [ "$kb" != "$want" ]; then
    verdict=FAIL why="A $ka, B $kb, wanted $want"
  fi
  # The mapped candidate r3's or r4's peer offered: a server-reflexive
  # address on its router's WAN with the port of its own socket (the STUN
  # server saw another port: --random-fully).
  local f port n
  mapped=""
  for f in "$WORK/$ta.log" "$WORK/$tb.log"; do
    for n in 3 4; do
      port="$(sed -nE "s/.*sockets: 10\\.0\\.$n\\.2:([0-9]+).*/\\1/p" "$f" | head -n 1)"
      [ -n "$port" ] || continue
      mapped="$(grep -o "local srflx $LAB_NET\\.10$n:$port" "$f" | head -n 1 | sed 's/local srflx //' || true)"
    done
  done
  if [ "$verdict" = ok ] && [ "$want" = direct ] && [ -z "$mapped" ]; then
    verdict=FAIL why="the mapping router's peer offered no mapped candidate"
  fi
  [ "$verdict" = ok ] || FAILED+=("$name: $why")
  echo "nat-lab-portmap: scenario $SCENARIO ($name): A $ka ($(json_field "$la" local_kind)-$(json_field "$la" remote_kind)), B $kb; ICE ${ms_a:-?}/${ms_b:-?} ms; $verdict${why:+ ($why)} [$((SECONDS - t0)) s]"
  if [ "$verdict" != ok ]; then
    echo "--- peer A ($ta):"; cat "$WORK/$ta.log"
    echo "--- peer B ($tb):"; cat "$WORK/$tb.log"
  fi >&2
  ROWS+=("$(printf '| %s | %s | A %s, B %s | %s / %s | %s | %s |' "$name" "$want" "$ka" "$kb" \
    "${ms_a:--}" "${ms_b:--}" "${mapped:--}" "$verdict")")
}

# Mappings left on routers 3 and 4 (DNAT rules in miniupnpd's chains).
leftover() {
  local n c=0
  for n in 3 4; do
    c=$((c + $(in_ns "$PREFIX-r$n" iptables-legacy -t nat -S MINIUPNPD | grep -c -- "-j DNAT" || true)))
  done
  echo "$c"
}

C="$PREFIX-c"
echo
echo "nat-lab-portmap: scenarios (each bounded by ${SCENARIO_TIMEOUT} s)"
scenario "r1 EIM/APDF x r2 APDM, no router maps (today's relay)" relay "${C}1" "${C}2"
scenario "r1 EIM/APDF x r3 APDM + miniupnpd" direct "${C}1" "${C}3"
scenario "r3 APDM + miniupnpd x r1 EIM/APDF (other join order)" direct "${C}3" "${C}1"
scenario "r2 APDM x r3 APDM + miniupnpd" direct "${C}2" "${C}3"
scenario "r3 APDM + miniupnpd x r2 APDM (other join order)" direct "${C}3" "${C}2"
scenario "r2 APDM x r4 APDM + miniupnpd UPnP IGD only" direct "${C}2" "${C}4"
scenario "r4 APDM + miniupnpd UPnP IGD only x r1 EIM/APDF" direct "${C}4" "${C}1"
# A peer's delete may still be on its way to the router as the peer exits
# (PCP/NAT-PMP over UDP): give the routers up to 3 s; a mapping never
# deleted is still counted.
left="$(leftover)"
for _ in $(seq 30); do
  [ "$left" = 0 ] && break
  sleep 0.1
  left="$(leftover)"
done
[ "$left" = 0 ] || FAILED+=("$left mapping(s) left on routers 3 and 4 after the peers exited")
scenario "r1 x r3 with --no-port-mapping on r3's peer (the switch)" relay "${C}1" "${C}3 --no-port-mapping"
grep -q "PCP MAP: added mapping\|NAT-PMP port mapping request" "$WORK/miniupnpd-r3.log" \
  || FAILED+=("miniupnpd on r3 saw no PCP/NAT-PMP request")
grep -q "AddPortMapping" "$WORK/miniupnpd-r4.log" || FAILED+=("miniupnpd on r4 saw no UPnP AddPortMapping")

echo
echo "| scenario | wanted | final path | ICE ms (A / B) | mapped candidate offered | verdict |"
echo "|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do echo "$row"; done
echo "mappings left on routers 3 and 4 after the peers exited: $left"
echo
if [ "${#FAILED[@]}" -gt 0 ]; then
  for f in "${FAILED[@]}"; do echo "nat-lab-portmap: FAIL: $f" >&2; done
  fail "${#FAILED[@]} check(s) failed"
fi
echo "nat-lab-portmap: all passed"
