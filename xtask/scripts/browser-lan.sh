#!/usr/bin/env bash
# A Chromium tab with its default mDNS setting (host candidates named
# <uuid>.local) and `p2p connect` on one LAN, in network namespaces:
#
#   p2pmdns-tab   10.77.0.2/24 on eth0 (its default route, so Chromium
#                 gathers), headless Chromium driven by playwright-core
#   p2pmdns-cli   10.77.0.1/24 on eth0, `p2p serve` (signaling and the
#                 page) and `p2p connect`
#
# The tab's only address reaches us as a name; Chromium's STUN requests are
# dropped (a server-reflexive candidate would give its address away). Runs:
#   1. mdns:         p2p connect resolves the name and ends on host <-> host;
#   2. mdns-checks-dropped: the tab's namespace drops every new UDP flow it
#                    starts (mDNS aside), so its checks cannot reach us:
#                    only our checks, to the resolved name, open the path;
#   3. mdns-unresolved-no-path: the control of 2: mDNS to and from
#                    p2p connect is dropped too, and neither side connects.
#   4. tcp-only-tab: the tab's namespace drops all UDP (no mDNS either),
#                    p2p connect runs with --ice-tcp: the path is ICE-TCP
#                    between Chromium's TCP candidates and ours (or the
#                    tab's TURN over TCP, if it got one); the run says which;
#   5. tcp-only-tab-first: the same, the tab joining first.
#   6. cli-hidden:   p2p connect --mdns-hide: its host address goes out as
#                    a .local name only, its responder answers the query
#                    of a second p2p connect in the tab's namespace, and
#                    its own checks are dropped (new UDP flows but mDNS):
#                    the resolver's checks to the resolved name open the
#                    path, host.
#   7. page-asks-hidden, 8. page-asks-hidden-cli-first: the page opened
#                    with &hide=1 asks its peer to hide its addresses
#                    (hideHosts); p2p connect, without --mdns-hide, signals
#                    names only; its own checks are dropped, so only
#                    Chromium's checks, to the address Chromium's own mDNS
#                    client resolved our name to (its one-shot query from
#                    port 5353, our responder's answer to the group), can
#                    open the path: the tab's pair has a host remote;
#   9. page-asks-hidden-unanswered-no-path: the control of 7: our mDNS
#                    answers are dropped too, and neither side connects.
# Needs root (namespaces, iptables); skipped outside CI without it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "browser-lan: $1 (required in CI)" >&2
    exit 1
  fi
  echo "browser-lan: skipped: $1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (network namespaces and iptables)"
command -v ip >/dev/null 2>&1 || skip_or_fail "iproute2 (ip) not installed"
command -v iptables >/dev/null 2>&1 || skip_or_fail "iptables not installed"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || skip_or_fail "no Chromium at $CHROMIUM (browser.sh installs it)"
command -v node >/dev/null 2>&1 || skip_or_fail "node not found"
NODE_DIR="$TARGET/browser-node"
if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null 2>&1 || skip_or_fail "npm not found"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"private": true}' >"$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent playwright-core@1) \
    || skip_or_fail "cannot install playwright-core"
fi
export NODE_PATH="$NODE_DIR/node_modules"

PREFIX="p2pmdns"
TAB="$PREFIX-tab"
CLI="$PREFIX-cli"
TAB_IP="10.77.0.2"
CLI_IP="10.77.0.1"
NAMESPACES=()
PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-browser-lan.XXXXXX")"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  for ns in "${NAMESPACES[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  dump_logs_on_failure "$rc" browser-lan
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
new_ns() {
  # A namespace left by a crashed run of this script is ours to replace.
  ip netns del "$1" 2>/dev/null || true
  ip netns add "$1"
  NAMESPACES+=("$1")
  in_ns "$1" ip link set lo up
}

echo "browser-lan: building p2p"
cargo build --quiet -p p2p-cli
P2P="$TARGET/debug/p2p"
[ -x "$P2P" ] || { echo "browser-lan: $P2P not found" >&2; exit 1; }

# ---------------------------------------------------------------- the LAN
new_ns "$TAB"
new_ns "$CLI"
ip -n "$CLI" link add eth0 type veth peer name eth0 netns "$TAB"
in_ns "$CLI" ip addr add "$CLI_IP/24" dev eth0
in_ns "$CLI" ip link set eth0 up
in_ns "$TAB" ip addr add "$TAB_IP/24" dev eth0
in_ns "$TAB" ip link set eth0 up
in_ns "$TAB" ip route add default via "$CLI_IP"
# No server-reflexive candidate for the tab: its STUN requests are dropped.
in_ns "$TAB" iptables -A OUTPUT -p udp --dport 3478 -j DROP

in_ns "$CLI" "$P2P" serve --listen "$CLI_IP:3478" --signaling "$CLI_IP:8080" \
  --log info >"$WORK/serve.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
  in_ns "$CLI" bash -c "exec 3<>/dev/tcp/$CLI_IP/8080" 2>/dev/null && break
  sleep 0.1
done

# Chromium runs in the tab's namespace, p2p connect in the other one.
cat >"$WORK/chromium" <<SH
#!/bin/sh
exec ip netns exec $TAB "$CHROMIUM" "\$@"
SH
cat >"$WORK/p2p" <<SH
#!/bin/sh
exec ip netns exec $CLI "$P2P" "\$@"
SH
chmod +x "$WORK/chromium" "$WORK/p2p"

passed=0
run() {
  local name="$1"
  shift
  echo "browser-lan: $name"
  out="$(timeout 180 node crates/server/tests/browser/cli.mjs \
    --base "http://$CLI_IP:8080" --p2p "$WORK/p2p" --chromium "$WORK/chromium" \
    "$@" 2>"$WORK/node-$name.log")" || { cat "$WORK/node-$name.log" >&2; exit 1; }
  echo "browser-lan: ok: $out"
  passed=$((passed + 1))
}
run "mdns" --mdns "$TAB_IP" --order tab-first
# The tab's checks are dropped: every new UDP flow it starts, but mDNS.
in_ns "$TAB" iptables -A OUTPUT -p udp -m conntrack --ctstate NEW ! --dport 5353 -j DROP
run "mdns-checks-dropped" --mdns "$TAB_IP" --order cli-first
# The control: no mDNS reaches p2p connect (neither answers nor Chromium's
# unsolicited announcements of its names, RFC 6762 §8.3, which resolve a
# pending name too) and its queries stay in: nothing can open the path.
in_ns "$CLI" iptables -A OUTPUT -p udp --dport 5353 -j DROP
in_ns "$CLI" iptables -A INPUT -p udp --dport 5353 -j DROP
run "mdns-unresolved-no-path" --mdns "$TAB_IP" --order cli-first --no-path
# ICE-TCP: the tab has no UDP at all; Chromium's TCP candidates and ours.
in_ns "$CLI" iptables -F
in_ns "$TAB" iptables -F
in_ns "$TAB" iptables -A OUTPUT -p udp -j DROP
in_ns "$TAB" iptables -A INPUT -p udp -j DROP
run "tcp-only-tab" --ice-tcp --order cli-first
run "tcp-only-tab-first" --ice-tcp --order tab-first
# Our own names: p2p connect --mdns-hide in the cli namespace, a second
# p2p connect (a resolver) in the tab's. The hider's own checks cannot
# leave (new UDP flows but mDNS): the resolver's checks to the resolved
# name open the path, which it must report as host at CLI_IP.
in_ns "$CLI" iptables -F
in_ns "$TAB" iptables -F
in_ns "$CLI" iptables -A OUTPUT -p udp --sport 5353 -j ACCEPT
in_ns "$CLI" iptables -A OUTPUT -p udp -m conntrack --ctstate NEW ! --dport 5353 -j DROP
echo "browser-lan: cli-hidden (p2p connect --mdns-hide and p2p connect)"
room="hidden-$$"
hider_args=(connect --signaling "ws://$CLI_IP:8080/ws" --room "$room" --json --expect-lines 1
  --timeout 20 --peer-timeout 20)
{ trap '' PIPE; for i in $(seq 1 200); do echo "line $i" || break; sleep 0.1; done 2>/dev/null; } \
  | timeout 40 "$WORK/p2p" "${hider_args[@]}" --mdns-hide --linger-ms 3000 \
  >/dev/null 2>"$WORK/hider.log" &
hider=$!
PIDS+=("$hider")
sleep 0.3
{ trap '' PIPE; for i in $(seq 1 200); do echo "line $i" || break; sleep 0.1; done 2>/dev/null; } \
  | RUST_LOG=warn,p2p_connect=debug timeout 40 ip netns exec "$TAB" "$P2P" "${hider_args[@]}" \
  --linger-ms 300 >/dev/null 2>"$WORK/resolver.log" || rc_r=$?
wait "$hider" || rc_h=$?
if [ "${rc_r:-0}" != 0 ] || [ "${rc_h:-0}" != 0 ]; then
  echo "browser-lan: cli-hidden: exit codes hider ${rc_h:-0}, resolver ${rc_r:-0}" >&2
  exit 1
fi
# The hider signalled names only; the resolver resolved one to CLI_IP and ended there.
grep '"event":"local_candidate"' "$WORK/hider.log" | grep -q '\.local' \
  || { echo "browser-lan: the hider signalled no name" >&2; cat "$WORK/hider.log" >&2; exit 1; }
if grep '"event":"local_candidate"' "$WORK/hider.log" | grep -q "$CLI_IP"; then
  echo "browser-lan: the hider gave its address away" >&2; cat "$WORK/hider.log" >&2; exit 1
fi
grep -q "mDNS: .*\.local is \[$CLI_IP\]" "$WORK/resolver.log" \
  || { echo "browser-lan: the name did not resolve" >&2; cat "$WORK/resolver.log" >&2; exit 1; }
last="$(grep -E '"event":"(ready|path_changed)"' "$WORK/resolver.log" | tail -n 1)"
if [[ "$last" != *'"remote_kind":"host"'* || "$last" != *"\"remote_address\":\"$CLI_IP:"* ]]; then
  echo "browser-lan: the resolver ended on $last" >&2
  exit 1
fi
echo "browser-lan: ok: $(grep -o "mDNS: [^ ]*\.local is \[[^]]*\]" "$WORK/resolver.log" | head -1); resolver on host $CLI_IP"
passed=$((passed + 1))
# The page asks p2p connect to hide its address; Chromium must resolve our
# name. p2p connect's own checks (new UDP flows but mDNS) are dropped, its
# STUN requests with them (no server-reflexive candidate), and the tab's
# STUN requests as at the start.
in_ns "$CLI" iptables -F
in_ns "$TAB" iptables -F
in_ns "$TAB" iptables -A OUTPUT -p udp --dport 3478 -j DROP
in_ns "$CLI" iptables -A OUTPUT -p udp --sport 5353 -j ACCEPT
in_ns "$CLI" iptables -A OUTPUT -p udp -m conntrack --ctstate NEW ! --dport 5353 -j DROP
run "page-asks-hidden" --hidden "$CLI_IP" --order tab-first
run "page-asks-hidden-cli-first" --hidden "$CLI_IP" --order cli-first
# The control: nothing leaves p2p connect's mDNS port, so Chromium cannot
# resolve our name, and no path opens.
in_ns "$CLI" iptables -I OUTPUT 1 -p udp --sport 5353 -j DROP
run "page-asks-hidden-unanswered-no-path" --hidden "$CLI_IP" --order cli-first --no-path
echo "browser-lan: $passed passed, 0 failed"
