#!/usr/bin/env bash
# A real browser against `p2p serve`, on loopback only: headless Chromium
# (Debian package `chromium`) driven by playwright-core (npm) opens the page
# that the daemon serves at / in two tabs of one room; they meet through our
# signaling server and chat over a WebRTC data channel:
#   1. with iceTransportPolicy 'relay': the selected pair must be relay/relay
#      and our TURN server's metrics must count the chat bytes as relayed;
#   2. with the default policy: they connect (directly on this host);
#   3. against a daemon with static TURN users (--user) that shares one of
#      them with the page (--signaling-turn-user): relay/relay again;
#   4. against a daemon with static users it does not share: the page opened
#      with &relay=1 says at once why relaying cannot work.
# Without Chromium (and no way to install it): skipped outside CI, a failure
# in CI (CI=true).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "browser: $1 (required in CI)" >&2
    exit 1
  fi
  echo "browser: skipped: $1"
  exit 0
}

# ---------------------------------------------------------------- tools
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_browser browser "$TARGET"

# ---------------------------------------------------------------- the servers
# Ports of our own, away from the defaults and from interop.sh's.
STUN_PORT=24900
SIGNALING_PORT=24901
METRICS_PORT=24902
STATIC_STUN_PORT=24903
STATIC_SIGNALING_PORT=24904
STATIC_METRICS_PORT=24905
CLOSED_STUN_PORT=24906
CLOSED_SIGNALING_PORT=24907

WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-browser.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  stop_pids
  dump_logs_on_failure "$rc" browser
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "browser: building p2p"
cargo build --quiet -p p2p-cli
P2P="$TARGET/debug/p2p"
[ -x "$P2P" ] || { echo "browser: $P2P not found" >&2; exit 1; }

# wait_for PORT...: every port accepts a TCP connection, or the daemon died.
wait_for() {
  local pid="${PIDS[${#PIDS[@]}-1]}"
  for _ in $(seq 1 100); do
    local up=1
    for port in "$@"; do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || up=0
    done
    [ "$up" = 1 ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "browser: p2p serve did not start (ports $*)" >&2
  exit 1
}

# TURN with a REST secret: the signaling server hands each tab short-lived
# credentials. Relaying between two tabs on this host means relaying to
# loopback peers, which the default policy refuses.
"$P2P" serve --listen "127.0.0.1:$STUN_PORT" --signaling "127.0.0.1:$SIGNALING_PORT" \
  --realm p2p.test --auth-secret "browser-$$-$RANDOM" --allow-peer 127.0.0.0/8 \
  --metrics "127.0.0.1:$METRICS_PORT" --log info >"$WORK/serve.log" 2>&1 &
PIDS+=("$!")
wait_for "$SIGNALING_PORT" "$METRICS_PORT"

# Static long-term users, one of them shared with the page.
"$P2P" serve --listen "127.0.0.1:$STATIC_STUN_PORT" --signaling "127.0.0.1:$STATIC_SIGNALING_PORT" \
  --realm p2p.test --user "guest:guest-$$-$RANDOM" --user "admin:admin-$$-$RANDOM" \
  --signaling-turn-user guest --allow-peer 127.0.0.0/8 \
  --metrics "127.0.0.1:$STATIC_METRICS_PORT" --log info >"$WORK/serve-static.log" 2>&1 &
PIDS+=("$!")
wait_for "$STATIC_SIGNALING_PORT" "$STATIC_METRICS_PORT"

# Static users, none shared: relay cannot work for the page.
"$P2P" serve --listen "127.0.0.1:$CLOSED_STUN_PORT" --signaling "127.0.0.1:$CLOSED_SIGNALING_PORT" \
  --realm p2p.test --user "alice:alice-$$-$RANDOM" --log info >"$WORK/serve-closed.log" 2>&1 &
PIDS+=("$!")
wait_for "$CLOSED_SIGNALING_PORT"

# ---------------------------------------------------------------- the runs
passed=0
# run NAME SIGNALING_PORT POLICY [METRICS_PORT] [chat.mjs args...]
run() {
  local name="$1" port="$2" policy="$3" metrics="${4:-}"
  shift 4 || shift $#
  local margs=()
  [ -n "$metrics" ] && margs=(--metrics "http://127.0.0.1:$metrics/metrics")
  echo "browser: $name"
  out="$(timeout 120 node crates/server/tests/browser/chat.mjs \
    --base "http://127.0.0.1:$port" --policy "$policy" --chromium "$CHROMIUM" \
    "${margs[@]}" "$@" 2>"$WORK/node-$name.log")" || { cat "$WORK/node-$name.log" >&2; exit 1; }
  echo "browser: ok: $out"
  passed=$((passed + 1))
}
run "rest-relay" "$SIGNALING_PORT" relay "$METRICS_PORT"
run "rest-all" "$SIGNALING_PORT" all ""
run "static-user-relay" "$STATIC_SIGNALING_PORT" relay "$STATIC_METRICS_PORT"
run "static-unshared" "$CLOSED_SIGNALING_PORT" relay "" --expect no-relay

# A tab and `p2p connect` (our stack) chat over an encrypted data channel.
# cli NAME cli.mjs args...
cli() {
  local name="$1"
  shift
  echo "browser: $name"
  out="$(timeout 180 node crates/server/tests/browser/cli.mjs \
    --base "http://127.0.0.1:$SIGNALING_PORT" --p2p "$P2P" --chromium "$CHROMIUM" \
    "$@" 2>"$WORK/node-$name.log")" || { cat "$WORK/node-$name.log" >&2; exit 1; }
  echo "browser: ok: $out"
  passed=$((passed + 1))
}
cli "tab-then-cli" --order tab-first
cli "cli-then-tab" --order cli-first
cli "tab-then-cli-relay" --order tab-first --policy relay
cli "cli-then-tab-relay" --order cli-first --policy relay
cli "altered-fingerprint" --order tab-first --tamper
cli "file-tab-to-receive" --order tab-first --file to-cli
cli "file-send-to-tab" --order cli-first --file from-cli
echo "browser: $passed passed, 0 failed"
