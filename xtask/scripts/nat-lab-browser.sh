#!/usr/bin/env bash
# The NAT lab with a browser (see docs/nat-lab.md, part 3): headless
# Chromium behind one real NAT and `p2p connect` behind another chat over an
# encrypted WebRTC data channel, on the path the ICE matrix predicts.
#
#   p2pweb-srv   203.0.113.10 + .11 on a bridge (the "public" segment), runs
#                `p2p serve`: STUN (RFC 5780 with --alt-listen), TURN with a
#                REST secret (the signaling server hands each member
#                short-lived credentials), signaling and the page on
#                http://203.0.113.10:8080
#   p2pweb-rN    a NAT router: WAN 203.0.113.10N on the bridge, LAN 10.0.N.1/24
#   p2pweb-cN    a client 10.0.N.2 behind router N
#
#   browser side:  r1 MASQUERADE                 EIM mapping, APD filtering
#                  r2 MASQUERADE --random-fully  APD mapping, APD filtering
#   p2p side:      r3 MASQUERADE                 EIM mapping, APD filtering
#                  r4 MASQUERADE --random-fully  APD mapping, APD filtering
#                  r5 SNAT + DNAT of inbound UDP EIM mapping, EI filtering
#
# First `p2p nat-type` names each router (the NATs must be what the rows
# say). Then each row runs xtask/scripts/nat-lab-browser.mjs under node in
# the browser's namespace: it launches Chromium there, opens the page, and
# starts `p2p connect --json` in the other client's namespace (`ip netns
# exec`); both use the ICE servers the signaling server hands out. The row
# passes when lines (ASCII, UTF-8, 64 KiB) cross both ways intact, the
# certificates each side sees are the ones the other reports, and both the
# tab's getStats and p2p connect's selected pair are on the path that
# docs/ice-matrix.md (crates/connect/tests/matrix.rs) predicts for that NAT
# pair: direct (srflx/prflx at both ends) or relayed.
#
# Only namespaces this script creates are touched (every link is created
# inside them); all of it is deleted on exit, failure included. Needs root,
# iptables and Chromium; outside CI (CI != true) it skips without them.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "nat-lab-browser: $1 (required in CI)" >&2
    exit 1
  fi
  echo "nat-lab-browser: skipped: $1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (network namespaces and iptables)"
command -v ip >/dev/null 2>&1 || skip_or_fail "iproute2 (ip) not installed"
command -v iptables >/dev/null 2>&1 || skip_or_fail "iptables not installed"

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Where cargo puts things: CARGO_TARGET_DIR (relative to the workspace) or target/.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
need_browser nat-lab-browser "$TARGET_DIR"

# Not nat-lab.sh's p2plab-*: both labs may exist at once.
PREFIX="p2pweb"
SRV="$PREFIX-srv"
SERVER_IP="203.0.113.10"
SERVER="$SERVER_IP:3478"
ALT="203.0.113.11:3479"
BASE="http://$SERVER_IP:8080"
ROW_TIMEOUT=120 # seconds one row may take, Chromium's start included
NAMESPACES=()
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-natlab-web.XXXXXX")"

cleanup() {
  local rc=$?
  stop_pids
  del_namespaces
  dump_logs_on_failure "$rc" nat-lab-browser
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "nat-lab-browser: FAIL: $*" >&2; exit 1; }

echo "nat-lab-browser: building p2p"
cargo build --quiet -p p2p-cli
P2P="$TARGET_DIR/debug/p2p"
[ -x "$P2P" ] || fail "$P2P not found"

# ---------------------------------------------------------------- topology
# (in_ns, new_ns, public_segment, add_router, add_client and nat: lib.sh)
ROUTERS=(1 2 3 4 5)
declare -A KIND=([1]=eim-apdf [2]=apdm [3]=eim-apdf [4]=apdm [5]=full-cone)
# The names docs/ice-matrix.md gives these NATs (mapping/filtering).
declare -A MATRIX=([1]=EIM/APDF [2]=APDM/APDF [3]=EIM/APDF [4]=APDM/APDF [5]=EIM/EIF)
public_segment "$SRV" 203.0.113.10 203.0.113.11
for n in "${ROUTERS[@]}"; do
  add_router "$SRV" "$PREFIX-r$n" "$n"
  new_ns "$PREFIX-c$n"
  add_client "$PREFIX-r$n" "$PREFIX-c$n" lp0 "10.0.$n.2" "10.0.$n.1"
  nat "$PREFIX-r$n" "${KIND[$n]}" "203.0.113.10$n" "10.0.$n.2"
done
flush_conntrack() {
  local n
  for n in "${ROUTERS[@]}"; do in_ns "$PREFIX-r$n" conntrack -F >/dev/null 2>&1 || true; done
}

# ---------------------------------------------------------------- the server
# TURN with a REST secret: the page and p2p connect both take the ICE
# servers (stun:, turn: over UDP and TCP, fresh credentials) from the
# signaling server. --user-quota 0: allocations outlive the rows.
NO_COLOR=1 ip netns exec "$SRV" "$P2P" serve --listen "$SERVER" --alt-listen "$ALT" \
  --software "p2p nat-lab-browser" --realm nat-lab --auth-secret "nat-lab-web-$$-$RANDOM" \
  --relay-ip "$SERVER_IP" --user-quota 0 --signaling "$SERVER_IP:8080" --log info \
  >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 50); do
  if in_ns "$PREFIX-c1" "$P2P" stun "$SERVER" >/dev/null 2>&1 \
    && in_ns "$PREFIX-c1" bash -c "exec 3<>/dev/tcp/$SERVER_IP/8080" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.2
done
[ "$ready" = 1 ] || fail "the server in $SRV does not answer on $SERVER and $SERVER_IP:8080"

# ---------------------------------------------------------------- the NATs are what they say
EIM=endpoint-independent
APD=address-and-port-dependent
declare -A WANT_MAPPING=([1]=$EIM [2]=$APD [3]=$EIM [4]=$APD [5]=$EIM)
declare -A WANT_FILTERING=([1]=$APD [2]=$APD [3]=$APD [4]=$APD [5]=$EIM)
json_field() { # json_field LINE KEY -> the value of a flat "KEY":"value" or "KEY":bare
  sed -nE "s/.*\"$2\":\"?([^\",}]*)\"?.*/\1/p" <<<"$1"
}
for n in "${ROUTERS[@]}"; do
  flush_conntrack
  out="$(in_ns "$PREFIX-c$n" "$P2P" nat-type --json "$SERVER" 2>"$WORK/nat-type-$n.log")" \
    || fail "nat-type behind router $n: $(cat "$WORK/nat-type-$n.log")"
  mapping="$(json_field "$out" mapping)"
  filtering="$(json_field "$out" filtering)"
  echo "nat-lab-browser: r$n (${KIND[$n]}): mapping $mapping, filtering $filtering"
  if [ "$mapping" != "${WANT_MAPPING[$n]}" ] || [ "$filtering" != "${WANT_FILTERING[$n]}" ]; then
    fail "router $n is not ${MATRIX[$n]}: $out"
  fi
done

# ---------------------------------------------------------------- the rows
# predicted A_NAT B_NAT -> direct|relay, from docs/ice-matrix.md's row for
# that pair (A controlling): srflx or prflx is direct, relay is relay. A
# cell the matrix reaches by hard-NAT traversal, "(probing)" or
# "(prediction)" after its expectation, is one ICE alone relays: traversal
# runs only between two p2p-connect peers that both announce the
# p2phardnat ICE option, which a browser never does, so relay.
predicted() {
  local row expected path
  row="$(grep -F "| $1 | $2 |" docs/ice-matrix.md | head -n 1)"
  expected="$(cut -d'|' -f4 <<<"$row")"
  case "$expected" in
  *"(probing)"* | *"(prediction)"*)
    echo relay
    return
    ;;
  esac
  path="$(tr -d ' ' <<<"$expected")"
  case "$path" in
  srflx | prflx) echo direct ;;
  relay) echo relay ;;
  *) echo "no row for $1 x $2 in docs/ice-matrix.md: '$row'" >&2; return 1 ;;
  esac
}

# summary LINE KEY[.KEY]: a field of nat-lab-browser.mjs's JSON line ('' if none).
summary() {
  node -e 'let v; try { v = JSON.parse(process.argv[1]); } catch { v = {}; }
    for (const k of process.argv[2].split(".")) v = v == null ? v : v[k];
    process.stdout.write(v == null ? "" : String(v));' "$1" "$2"
}

ROWS=()
FAILED=()
ROW=0
# row NAME BROWSER_ROUTER P2P_ROUTER ORDER MDNS
#   ORDER tab-first: p2p connect joins second, offers and controls ICE;
#         cli-first: the tab offers and controls.
#   MDNS  on: Chromium as shipped, its host candidates are random .local
#         names (p2p connect skips them); off: the real LAN address.
row() {
  local name=$1 b=$2 p=$3 order=$4 mdns=$5
  ROW=$((ROW + 1))
  local a_nat b_nat want
  if [ "$order" = cli-first ]; then
    a_nat="${MATRIX[$b]}" b_nat="${MATRIX[$p]}"
  else
    a_nat="${MATRIX[$p]}" b_nat="${MATRIX[$b]}"
  fi
  want="$(predicted "$a_nat" "$b_nat")" || fail "the matrix does not predict row $ROW"
  flush_conntrack
  local t0=$SECONDS rc=0 out
  # In the background, so that a signal to this script is handled at once
  # (cleanup stops it by PID; timeout passes the signal on to node).
  P2P_CLI_STDERR="$WORK/row$ROW-p2p.log" timeout "$ROW_TIMEOUT" ip netns exec "$PREFIX-c$b" \
    node xtask/scripts/nat-lab-browser.mjs --base "$BASE" --p2p "$P2P" --p2p-ns "$PREFIX-c$p" \
    --order "$order" --want "$want" --mdns "$mdns" --chromium "$CHROMIUM" \
    --room "natlab-web-$ROW-$$" >"$WORK/row$ROW.out" 2>"$WORK/row$ROW-node.log" &
  local pid=$! n=${#PIDS[@]}
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  PIDS=("${PIDS[@]:0:n}") # done and reaped: its PID may be someone else's now
  out="$(tail -n 1 "$WORK/row$ROW.out")"
  local verdict=ok why tab cli ms
  why="$(summary "$out" why)"
  tab="$(summary "$out" tab.path)"
  cli="$(summary "$out" cli.path)"
  ms="$(summary "$out" cli.ice_ms)"
  if [ "$rc" != 0 ]; then
    verdict=FAIL
    [ -n "$why" ] || why="$(grep -m1 '^Error' "$WORK/row$ROW-node.log" | cut -c1-300 || true)"
    [ -n "$why" ] || why="exit code $rc"
    FAILED+=("row $ROW ($name): $why")
  fi
  local offerer=p2p
  [ "$order" = cli-first ] && offerer=tab
  echo "nat-lab-browser: row $ROW ($name): tab ${tab:-?}, p2p ${cli:-?}; predicted $want;" \
    "$verdict${why:+ ($why)} [$((SECONDS - t0)) s]"
  [ "$rc" = 0 ] || {
    echo "--- node ($WORK/row$ROW-node.log):"
    cat "$WORK/row$ROW-node.log"
    echo "--- p2p connect:"
    cat "$WORK/row$ROW-p2p.log" 2>/dev/null || true
  } >&2
  [ -z "$out" ] || echo "nat-lab-browser:   $out"
  ROWS+=("$(printf '| %s | r%s %s | r%s %s | %s | %s | %s | %s | %s | %s | %s |' "$ROW" "$b" "${MATRIX[$b]}" \
    "$p" "${MATRIX[$p]}" "$offerer" "$( [ "$mdns" = on ] && echo mDNS || echo IP)" \
    "$want" "${tab:--}" "${cli:--}" "${ms:--}" "$verdict")")
}

echo
echo "nat-lab-browser: rows (each bounded by ${ROW_TIMEOUT} s)"
row "cone x cone" 1 3 tab-first on
row "cone x cone, the tab offers, host IPs shown" 1 3 cli-first off
row "cone x symmetric" 1 4 cli-first on
row "symmetric x cone" 2 3 tab-first on
row "symmetric x symmetric" 2 4 cli-first on
row "symmetric x full cone" 2 5 tab-first off

echo
echo "| row | browser behind | p2p connect behind | offers (controls) | tab's host candidates | matrix predicts | tab's pair (getStats, local-remote) | p2p connect's pair (--json) | p2p ICE ms | verdict |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
if [ "${#FAILED[@]}" -gt 0 ]; then
  for f in "${FAILED[@]}"; do echo "nat-lab-browser: FAIL: $f" >&2; done
  fail "${#FAILED[@]} row(s) failed"
fi
echo "nat-lab-browser: all passed"
